package wire

import (
	"fmt"
	"strings"
)

// Names and paths from the cloud end up as paths on the gateway (the
// agent's pods/<uid>/volumes/<volume> directories, log directories named
// <namespace>_<pod>_<uid>/<container>, ConfigMap and Secret files inside
// a volume). They are checked here, with Kubernetes' own rules, so an
// object holding a name that could name another place ("..", "/", a glob
// character) is refused when it is decoded, with the rule it broke; the
// agent checks again with the same functions where it builds a path.

// CheckLabel reports whether s is a DNS-1123 label, as Kubernetes wants
// namespaces, container names and volume names: 1 to 63 lowercase
// letters, digits and '-', starting and ending with a letter or digit.
func CheckLabel(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s missing", what)
	}
	if !isLabel(s) {
		return fmt.Errorf("%s %q is not a DNS-1123 label (1 to 63 lowercase letters, digits or '-', starting and ending with a letter or digit)", what, truncText(s))
	}
	return nil
}

// CheckSubdomain reports whether s is a DNS-1123 subdomain, as Kubernetes
// wants pod, ConfigMap and Secret names: at most 253 characters, labels
// joined by '.'.
func CheckSubdomain(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s missing", what)
	}
	ok := s != "" && len(s) <= maxNameLen
	for _, l := range strings.Split(s, ".") {
		ok = ok && isLabel(l)
	}
	if !ok {
		return fmt.Errorf("%s %q is not a DNS-1123 subdomain (at most 253 lowercase letters, digits, '-' or '.', each part starting and ending with a letter or digit)", what, truncText(s))
	}
	return nil
}

// CheckUID reports whether s can be an object's UID. Kubernetes makes
// UIDs as UUIDs (36 characters, lowercase hex digits and dashes); any
// DNS-1123 label is taken, so a UID is always one safe path component.
func CheckUID(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s missing", what)
	}
	if !isLabel(s) {
		return fmt.Errorf("%s %q is not a UID (a UUID, or 1 to 63 lowercase letters, digits or '-')", what, truncText(s))
	}
	return nil
}

// CheckKey reports whether s is a valid ConfigMap or Secret key, which
// becomes a file name in a volume: at most 253 letters, digits, '-', '_'
// or '.', not "." and not starting with ".." (the kubelet's own names in
// a volume start with "..").
func CheckKey(what, s string) error {
	if s == "" {
		return fmt.Errorf("%s missing", what)
	}
	ok := s != "" && len(s) <= maxNameLen && s != "." && !strings.HasPrefix(s, "..")
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	if !ok {
		return fmt.Errorf("%s %q is not a valid key (at most 253 letters, digits, '-', '_' or '.'; not '.', not starting with '..')", what, truncText(s))
	}
	return nil
}

// CheckItemPath reports whether p may name a file in a ConfigMap, Secret,
// downward API or projected volume (items[].path), with the kubelet's
// rule: relative, no ".." element, not starting with "..".
func CheckItemPath(what, p string) error {
	if p == "" {
		return fmt.Errorf("%s missing", what)
	}
	if strings.HasPrefix(p, "..") {
		return fmt.Errorf("%s %q must not start with '..'", what, truncText(p))
	}
	return CheckSubPath(what, p)
}

// CheckSubPath reports whether p may be a volume mount's subPath (or an
// item path): a relative path without a ".." element and without NUL.
// Empty is the whole volume. It says nothing of symlinks inside the
// volume: the agent resolves those beneath the volume (agent/safepath).
func CheckSubPath(what, p string) error {
	if len(p) > 4096 {
		return fmt.Errorf("%s is %d bytes (limit 4096)", what, len(p))
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("%s %q must be a relative path", what, truncText(p))
	}
	if strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("%s must not contain NUL", what)
	}
	for _, e := range strings.Split(p, "/") {
		if e == ".." {
			return fmt.Errorf("%s %q must not contain '..'", what, truncText(p))
		}
	}
	return nil
}

func isLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// truncText keeps an error message short when a hostile value is long.
func truncText(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
