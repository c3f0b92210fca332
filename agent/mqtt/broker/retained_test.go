package broker

import "testing"

func TestMatches(t *testing.T) {
	for _, c := range []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/b", "a/c", false},
		{"a/b", "a/b/c", false},
		{"a/b/c", "a/b", false},
		{"a/+", "a/b", true},
		{"a/+", "a/", true},
		{"a/+", "a", false},
		{"a/+", "a/b/c", false},
		{"+/+", "a/b", true},
		{"+", "a", true},
		{"+", "a/b", false},
		{"#", "a/b/c", true},
		{"#", "a", true},
		{"a/#", "a", true},
		{"a/#", "a/b/c", true},
		{"a/#", "b/c", false},
		{"a/+/c/#", "a/b/c", true},
		{"a/+/c/#", "a/b/d/e", false},
		{"outpost/+/devices/+/+/reported/+", "outpost/gw/devices/default/air/reported/temperature", true},
		{"outpost/+/devices/+/+/reported/+", "outpost/gw/devices/default/air/reported", false},
		{"#", "$SYS/broker/uptime", false},
		{"+/broker/uptime", "$SYS/broker/uptime", false},
		{"$SYS/#", "$SYS/broker/uptime", true},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
	} {
		if got := matches(c.filter, c.topic); got != c.want {
			t.Errorf("matches(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}
