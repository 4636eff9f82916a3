package upstream

// CloseIdleConnections closes the client's idle connections to S-360; the
// handler calls it when its config is cleaned up, since a reload makes a
// new client and the old one's keep-alive connections would linger.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }
