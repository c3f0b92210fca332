package join

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"outpost.dev/agent/config"
	"outpost.dev/agent/store"
)

// Request is what "outpost-agent join" is asked beyond the config.
type Request struct {
	Token string
	// CAFile is a PEM file with the relay's CA; without it the CA is
	// fetched and checked with the token.
	CAFile string
	// CACertHash pins the CA: comma-separated sha256:<hex> (Options.CACertHashes).
	CACertHash string
	// Force replaces an identity the store already holds.
	Force bool
}

// Register adds the join command's flags for r to fs.
func (r *Request) Register(fs *flag.FlagSet) {
	fs.StringVar(&r.Token, "token", "", `bootstrap token ID.SECRET (create one with "outpost-relay token create")`)
	fs.StringVar(&r.CAFile, "ca-file", "", "PEM file with the relay's CA; without it the CA is fetched and checked with the token")
	fs.StringVar(&r.CACertHash, "ca-cert-hash", "", "pin the relay CA: sha256:<hex of its SubjectPublicKeyInfo>, as kubeadm prints it")
	fs.BoolVar(&r.Force, "force", false, "replace an existing identity")
}

// joinTimeout bounds a whole join.
const joinTimeout = 2 * time.Minute

// Enroll joins the node cfg describes (its name defaults to the lowercased
// hostname) and saves the identity in cfg.StateDir, refusing to replace
// one unless r.Force. Errors start with "join:"; a missing server or
// token is a config.UsageError.
func Enroll(ctx context.Context, cfg config.Config, r Request, log *slog.Logger) (store.Identity, error) {
	var id store.Identity
	if cfg.Server == "" {
		return id, config.UsageError{Err: fmt.Errorf("join: no relay URL: pass --server https://HOST:PORT or set server in %s", cfg.Path)}
	}
	if r.Token == "" {
		return id, config.UsageError{Err: errors.New(`join: no token: pass --token ID.SECRET (create one with "outpost-relay token create")`)}
	}
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return id, fmt.Errorf("join: cannot read the hostname (%v): pass --node-name", err)
		}
		cfg.NodeName = strings.ToLower(h)
	}
	if err := config.CheckNodeName(cfg.NodeName); err != nil {
		return id, fmt.Errorf("join: %w", err)
	}
	var caPEM []byte
	if r.CAFile != "" {
		var err error
		if caPEM, err = readSmall(r.CAFile); err != nil {
			return id, fmt.Errorf("join: --ca-file: %w", err)
		}
	}
	var pins []string
	if r.CACertHash != "" {
		pins = strings.Split(r.CACertHash, ",")
	}

	st, err := store.Open(cfg.StateDir)
	if err != nil {
		return id, fmt.Errorf("join: %w", err)
	}
	defer st.Close()
	if old, err := st.LoadIdentity(); err == nil && !r.Force {
		return id, fmt.Errorf("join: already joined as %s to %s: pass --force to replace this identity", old.NodeName, old.Server)
	} else if err != nil && !errors.Is(err, store.ErrNotJoined) {
		return id, fmt.Errorf("join: %w", err)
	}

	ctx, cancel := context.WithTimeout(ctx, joinTimeout)
	defer cancel()
	id, err = Join(ctx, Options{
		Server: cfg.Server, Token: r.Token, NodeName: cfg.NodeName,
		CAPEM: caPEM, CACertHashes: pins, Log: log,
	})
	if err != nil {
		return id, fmt.Errorf("join: %w", err)
	}
	if err := st.SaveIdentity(id); err != nil {
		return id, fmt.Errorf("join: saving identity in %s: %w", cfg.StateDir, err)
	}
	return id, nil
}

func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const limit = 1 << 20
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && len(b) > limit {
		return nil, fmt.Errorf("%s is over 1 MiB: is it a PEM file?", path)
	}
	return b, err
}
