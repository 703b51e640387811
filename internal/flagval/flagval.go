// Package flagval holds the flag.Value types of scorch's numeric, duration
// and boolean flags. Unlike the standard library's, whose errors say only
// "parse error", their errors say what form the value takes, so that a bad
// flag, environment variable or config-file value is reported with both the
// value given and the form wanted.
package flagval

import (
	"flag"
	"strconv"
	"strings"
	"time"
)

// FormError says what form a value should have taken. Callers name the
// flag (or variable, or key) and the value given.
type FormError struct{ Want string }

func (e *FormError) Error() string { return "want " + e.Want }

// Duration is a time.Duration flag.
type Duration time.Duration

// DurationVar defines a duration flag with the default def.
func DurationVar(fs *flag.FlagSet, p *time.Duration, name string, def time.Duration, usage string) {
	*p = def
	fs.Var((*Duration)(p), name, usage)
}

func (d *Duration) Set(s string) error {
	v, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return &FormError{"a duration such as 15s, 500ms or 1h30m"}
	}
	*d = Duration(v)
	return nil
}

func (d *Duration) String() string {
	if d == nil {
		return "0s"
	}
	return time.Duration(*d).String()
}

func (d *Duration) Get() any { return time.Duration(*d) }

// Type names the form in --help.
func (*Duration) Type() string { return "duration" }

// Int is an int flag.
type Int int

// IntVar defines an int flag with the default def.
func IntVar(fs *flag.FlagSet, p *int, name string, def int, usage string) {
	*p = def
	fs.Var((*Int)(p), name, usage)
}

func (n *Int) Set(s string) error {
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return &FormError{"a whole number such as 99"}
	}
	*n = Int(v)
	return nil
}

func (n *Int) String() string {
	if n == nil {
		return "0"
	}
	return strconv.Itoa(int(*n))
}

func (n *Int) Get() any { return int(*n) }

// Type names the form in --help.
func (*Int) Type() string { return "int" }

// Bool is a bool flag: --name alone sets it, --name=false clears it.
type Bool bool

// BoolVar defines a bool flag with the default def.
func BoolVar(fs *flag.FlagSet, p *bool, name string, def bool, usage string) {
	*p = def
	fs.Var((*Bool)(p), name, usage)
}

func (b *Bool) Set(s string) error {
	v, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return &FormError{"true or false"}
	}
	*b = Bool(v)
	return nil
}

func (b *Bool) String() string {
	if b == nil {
		return "false"
	}
	return strconv.FormatBool(bool(*b))
}

func (b *Bool) Get() any { return bool(*b) }

// IsBoolFlag lets --name stand for --name=true.
func (*Bool) IsBoolFlag() bool { return true }

// Type names the form in --help: none, a bool flag takes no value.
func (*Bool) Type() string { return "" }
