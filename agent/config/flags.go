package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Flags are a command's flags over the config file: --config, --server,
// --state-dir and --log-level for every command, and the fields a command
// adds with Field. A field flag is applied over the file only when given,
// so the file's value stands otherwise.
type Flags struct {
	*flag.FlagSet
	path   string
	fields map[string]func(*Config) *string
	values map[string]*string
}

// NewFlags returns the flags of command name over the file: the common
// ones, --node-name for join and --board for run. The FlagSet prints
// nothing: Load prints help, and the caller reports errors.
func NewFlags(name string) *Flags {
	f := &Flags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError),
		fields: map[string]func(*Config) *string{}, values: map[string]*string{}}
	f.SetOutput(io.Discard)
	f.Usage = func() {}
	f.StringVar(&f.path, "config", DefaultPath, "config file (need not exist)")
	f.Field("server", "relay URL, https://HOST:PORT (default: server in the config file)", func(c *Config) *string { return &c.Server })
	f.Field("state-dir", "state directory (default: stateDir in the config file, else "+DefaultStateDir+")", func(c *Config) *string { return &c.StateDir })
	f.Field("log-level", "debug, info, warn or error (default: logLevel in the config file, else info)", func(c *Config) *string { return &c.LogLevel })
	switch name {
	case "join":
		f.Field("node-name", "node name (default: nodeName in the config file, else the lowercased hostname)", func(c *Config) *string { return &c.NodeName })
	case "run":
		f.Field("board", "board name (default: board in the config file, else detected from /proc/device-tree/model, else sim)", func(c *Config) *string { return &c.Board })
	}
	return f
}

// Field adds a string flag that, when given, sets the Config field that
// at points to.
func (f *Flags) Field(name, usage string, at func(*Config) *string) {
	f.fields[name] = at
	f.values[name] = f.String(name, "", usage)
}

// UsageError is a mistake on the command line; commands exit 2 for it,
// as flag does.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// ExitCode is the exit status of a mistake on the command line.
func (UsageError) ExitCode() int { return 2 }

// Load parses args (printing the command's flags to help for -h, and
// returning flag.ErrHelp), reads the config file (which must exist when
// --config was given), applies the field flags that were given, and
// validates the result. A mistake in args is a UsageError.
func (f *Flags) Load(args []string, help io.Writer) (Config, error) {
	name := f.Name()
	if err := f.Parse(args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(help, "usage: outpost-agent %s [flags]\n\nflags:\n", name)
		f.SetOutput(help)
		f.PrintDefaults()
		return Config{}, err
	} else if err != nil {
		return Config{}, UsageError{fmt.Errorf("%s: %v (see \"outpost-agent %s -h\")", name, err, name)}
	}
	if f.NArg() > 0 {
		return Config{}, UsageError{fmt.Errorf("%s: unexpected argument %q (flags take the form --name value)", name, f.Arg(0))}
	}
	explicit := false
	f.Visit(func(fl *flag.Flag) { explicit = explicit || fl.Name == "config" })
	cfg, err := Load(f.path, explicit)
	if err != nil {
		return cfg, err
	}
	cfg.Path = f.path
	f.Visit(func(fl *flag.Flag) {
		if at := f.fields[fl.Name]; at != nil {
			*at(&cfg) = *f.values[fl.Name]
		}
	})
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return cfg, nil
}

// Logger is a text logger on w at cfg's log level.
func (cfg Config) Logger(w io.Writer) *slog.Logger {
	i, _ := ParseLogLevel(cfg.LogLevel) // checked by Validate
	lv := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}[i]
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv}))
}
