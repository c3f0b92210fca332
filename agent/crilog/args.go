package crilog

import (
	"errors"
	"fmt"
	"strconv"
)

// Args are the logger's options as containerd passes them: the query of
// binary:///…/outpost-agent?logger=PATH&max-size=N becomes key/value
// pairs in no fixed order (logger PATH [max-size BYTES] [max-files N]).
type Args struct {
	Path     string
	MaxSize  int64
	MaxFiles int
}

// ErrOddArgs is ParseArgs' error for options that do not come in pairs.
var ErrOddArgs = errors.New("options come in pairs: logger PATH [max-size BYTES] [max-files N]")

// IsLoggerCall reports whether args (os.Args[1:]) start a binary that
// serves other commands as a container's logger.
func IsLoggerCall(args []string) bool {
	if len(args)%2 != 0 {
		return false
	}
	for i := 0; i < len(args); i += 2 {
		if args[i] == "logger" {
			return true
		}
	}
	return false
}

// ParseArgs parses the logger's options; an error names the option.
func ParseArgs(args []string) (Args, error) {
	var a Args
	if len(args)%2 != 0 {
		return a, ErrOddArgs
	}
	for i := 0; i < len(args); i += 2 {
		k, v := args[i], args[i+1]
		var err error
		switch k {
		case "logger":
			a.Path = v
		case "max-size":
			a.MaxSize, err = strconv.ParseInt(v, 10, 64)
		case "max-files":
			a.MaxFiles, err = strconv.Atoi(v)
		default:
			err = errors.New("unknown option")
		}
		if err != nil {
			return a, fmt.Errorf("%s %q: %v", k, v, err)
		}
	}
	return a, nil
}
