// Package field is the error of one configuration setting that does not
// validate. The packages whose Config a person writes (oidcrp, samlsp) name
// the setting as the Caddyfile and the JSON config spell it (cookie_secret),
// and say what to write; caddymodule adds the block it sits in and an
// example line.
package field

import "fmt"

// Error is a setting that does not validate.
type Error struct {
	// Name is the setting, as the Caddyfile spells it: cookie_secret.
	Name string
	// Problem says what is wrong and what to write instead. It never
	// holds a secret.
	Problem string
}

func (e *Error) Error() string { return e.Name + ": " + e.Problem }

// Errorf is the *Error of the setting name.
func Errorf(name, format string, args ...any) error {
	return &Error{Name: name, Problem: fmt.Sprintf(format, args...)}
}
