package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// flagSample is how a flag of one type is given in a test and the value it must then
// have: a repeatable flag is given twice.
func flagSample(t *testing.T, f cli.Flag, name string) (args []string, want string) {
	t.Helper()
	switch f.(type) {
	case *cli.BoolFlag:
		return []string{name}, "true"
	case *cli.StringFlag:
		return []string{name, "v1"}, "v1"
	case *cli.StringSliceFlag:
		return []string{name, "127.0.0.0/8", name, "a b"}, "[127.0.0.0/8 a b]"
	case *cli.IntFlag, *cli.Int64Flag, *cli.Uint64Flag:
		return []string{name, "7"}, "7"
	case *cli.Float64Flag:
		return []string{name, "0.25"}, "0.25"
	case *cli.DurationFlag:
		return []string{name, "3s"}, "3s"
	}
	t.Fatalf("flag %s of type %T: give it a sample here", name, f)
	return nil, ""
}

// dash is how a flag name is written: -o, --output.
func dash(n string) string {
	if len(n) == 1 {
		return "-" + n
	}
	return "--" + n
}

// parsed runs the command line through the app with cmd's action replaced: it returns the
// arguments the command sees (after interspersed, for the commands that take arguments)
// and the value the flag then has.
func parsed(t *testing.T, argv []string, cmdName, flagName string) (args []string, value string, err error) {
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	app.ExitErrHandler = func(*cli.Context, error) {} // return the error, do not exit
	for _, c := range app.Commands {
		if c.Name != cmdName {
			continue
		}
		takesArgs := c.ArgsUsage != "" && c.Name != "record"
		c.Action = func(c *cli.Context) error {
			args = c.Args().Slice()
			if takesArgs {
				var err error
				if args, err = interspersed(c); err != nil {
					return err
				}
			}
			if s := c.StringSlice(flagName); s != nil {
				value = fmt.Sprint(s)
			} else {
				value = fmt.Sprint(c.Value(flagName))
			}
			return nil
		}
	}
	err = app.Run(append([]string{"coldtrace"}, argv...))
	return args, value, err
}

// TestFlagsInBothPositions gives every flag of every command (by each of its names)
// before the command's arguments and after them: both must set it alike, a repeatable flag
// to every value given. record's arguments are a command line: flags after them are the
// command's own. A command without arguments has only the first position.
func TestFlagsInBothPositions(t *testing.T) {
	for _, cmd := range newApp().Commands {
		// The required flags, given in every case so that the command runs.
		var required []string
		for _, f := range cmd.Flags {
			if r, ok := f.(cli.RequiredFlag); ok && r.IsRequired() {
				a, _ := flagSample(t, f, dash(f.Names()[0]))
				required = append(required, a...)
			}
		}
		for _, f := range cmd.Flags {
			for _, n := range f.Names() {
				t.Run(cmd.Name+"/"+dash(n), func(t *testing.T) {
					given, want := flagSample(t, f, dash(n))
					canonical := f.Names()[0]
					with := func(argv ...string) []string {
						return append(append([]string{cmd.Name}, required...), argv...)
					}
					// Before the arguments.
					arg := []string{"ARG"}
					if cmd.Name == "record" {
						arg = []string{"--", "CMD"}
					}
					if cmd.ArgsUsage == "" {
						arg = nil
					}
					args, got, err := parsed(t, with(append(slices.Clone(given), arg...)...), cmd.Name, canonical)
					if err != nil || got != want || !slices.Equal(args, slices.DeleteFunc(slices.Clone(arg), func(s string) bool { return s == "--" })) {
						t.Errorf("%s %s ARGS: args %q, value %q, error %v; want %q", cmd.Name, strings.Join(given, " "), args, got, err, want)
					}
					if cmd.ArgsUsage == "" {
						return
					}
					// After them.
					args, got, err = parsed(t, with(append(slices.Clone(arg), given...)...), cmd.Name, canonical)
					if cmd.Name == "record" {
						// The command's own flags: passed on, ours untouched.
						if err != nil || !slices.Equal(args, append([]string{"CMD"}, given...)) {
							t.Errorf("record -- CMD %s: args %q, error %v; want the flags passed on to CMD", strings.Join(given, " "), args, err)
						}
						return
					}
					if err != nil || got != want || !slices.Equal(args, arg) {
						t.Errorf("%s ARG %s: args %q, value %q, error %v; want [ARG] and %q", cmd.Name, strings.Join(given, " "), args, got, err, want)
					}
				})
			}
		}
	}
}

// TestFlagAfterArgumentsBadValue: a bad value after the arguments is bad usage, as before
// them.
func TestFlagAfterArgumentsBadValue(t *testing.T) {
	_, _, err := parsed(t, []string{"warm", "m.yaml", "--images", "many"}, "warm", "images")
	var ec cli.ExitCoder
	if !errors.As(err, &ec) || ec.ExitCode() != 2 || !strings.Contains(err.Error(), "--images") {
		t.Errorf("warm m.yaml --images many: %v, want exit 2 naming the flag", err)
	}
}
