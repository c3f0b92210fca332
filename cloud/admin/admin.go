// Package admin holds the relay's administrator commands, run with an
// administrator's kubeconfig rather than the relay's identity: creating
// join tokens, letting the relay act as edge nodes, and revoking a node.
// Each takes its command-line arguments and writes what it did to stdout.
package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"

	"outpost.dev/cloud/identity"
	"outpost.dev/cloud/join"
	"outpost.dev/cloud/nodegrant"
	"outpost.dev/cloud/nodes"
	"outpost.dev/cloud/relay"
	"outpost.dev/cloud/server"
)

const kubeconfigHelp = "kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster)"

// TokenCreate creates a bootstrap token and prints it (id.secret).
func TokenCreate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kubeconfig  = fs.String("kubeconfig", "", kubeconfigHelp)
		ttl         = fs.Duration("ttl", 24*time.Hour, "how long the token may be used to join")
		description = fs.String("description", "", "what the token is for, stored with it")
		node        = fs.String("node", "", "bind the token to this node name: it joins that name only, and it is the one way to re-join a node that exists already (its earlier certificates are revoked)")
		uses        = fs.Int("uses", 0, "how many joins the token allows (1: single use); 0: any number until it expires")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("token create: unexpected arguments %q", fs.Args())
	}
	client, err := adminClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if *node != "" {
		// The administrator who binds a token to a node also lets the
		// relay act as that node, so a bound token needs no second step.
		if err := nodes.CheckName(*node); err != nil {
			return fmt.Errorf("token create: %w", err)
		}
		if err := nodegrant.Allow(ctx, client, *node); err != nil {
			return err
		}
	}
	tok, err := join.CreateToken(ctx, client.CoreV1().Secrets(join.TokenNamespace),
		join.TokenOptions{TTL: *ttl, Description: *description, Node: *node, Uses: *uses}, time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

const nodeUsage = `usage: outpost-relay node revoke [--kubeconfig FILE] [--namespace outpost-system] [--reason TEXT] NAME
       outpost-relay node allow [--kubeconfig FILE] [--wait 1m] NAME...`

// Node runs node revoke and node allow.
func Node(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "revoke":
			return NodeRevoke(args[1:], stdout, stderr)
		case "allow":
			return NodeAllow(args[1:], stdout, stderr)
		}
	}
	return errors.New(nodeUsage)
}

// NodeRevoke marks a node's identity record revoked: every relay replica
// refuses its certificates and closes its link.
func NodeRevoke(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kubeconfig = fs.String("kubeconfig", "", kubeconfigHelp)
		namespace  = fs.String("namespace", relay.DefaultNamespace, "the relay's namespace (its serve --namespace), where node identity records live")
		reason     = fs.String("reason", "revoked by outpost-relay node revoke", "why, recorded and told to the agent")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("node revoke: give exactly one node name")
	}
	name := fs.Arg(0)
	if err := nodes.CheckName(name); err != nil {
		return fmt.Errorf("node revoke: %w", err)
	}
	client, err := adminClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := identity.New(client, *namespace).Revoke(ctx, name, strings.Join(strings.Fields(*reason), " ")); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "node %s revoked: every relay refuses its certificates and closes its link; re-join it with a token made by \"outpost-relay token create --node %s --uses 1\"\n", name, name)
	return nil
}

// NodeAllow lets the relay act as the named edge nodes (cloud/nodegrant)
// and waits until the relay's role says so.
func NodeAllow(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("node allow", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		kubeconfig = fs.String("kubeconfig", "", kubeconfigHelp)
		wait       = fs.Duration("wait", time.Minute, "how long to wait for the controller manager to add the grants to ClusterRole "+nodegrant.AggregatedRole+"; 0: do not wait")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("node allow: name the nodes: outpost-relay node allow NAME...")
	}
	for _, name := range fs.Args() {
		if err := nodes.CheckName(name); err != nil {
			return fmt.Errorf("node allow: %w", err)
		}
	}
	client, err := adminClient(*kubeconfig)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second+*wait)
	defer cancel()
	for _, name := range fs.Args() {
		if err := nodegrant.Allow(ctx, client, name); err != nil {
			return err
		}
	}
	if *wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, *wait)
		defer cancel()
		for _, name := range fs.Args() {
			if err := nodegrant.WaitAllowed(wctx, client, name); err != nil {
				return err
			}
		}
	}
	for _, name := range fs.Args() {
		fmt.Fprintf(stdout, "the relay may act as node %s (ClusterRole %s)\n", name, nodegrant.RoleName(name))
	}
	return nil
}

// adminClient is the client of the administrator running a command.
func adminClient(kubeconfig string) (kubernetes.Interface, error) {
	cfg, err := server.RestConfig(kubeconfig, false)
	if err != nil {
		return nil, err
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return client, nil
}
