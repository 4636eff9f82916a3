package s360

import "github.com/tidwall/gjson"

// StatusCode returns the envelope's statusCode ("success", "in_progress",
// "error", ...), or "" when the body has none.
func StatusCode(body []byte) string {
	return gjson.GetBytes(body, "statusCode").String()
}

// Success reports whether an answer may be stored: HTTP 200 and statusCode
// "success" (S360-API.md §3, §10).
func Success(status int, body []byte) bool {
	return status == 200 && StatusCode(body) == "success"
}
