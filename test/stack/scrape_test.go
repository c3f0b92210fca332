package stack

import (
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP apiserver_request_total Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",resource="leases",verb="PUT"} 42
apiserver_request_total_other 1
go_goroutines 7

apiserver_request_duration_seconds_bucket{le="0.005",verb="GET"} 3
`
	all, err := ParseMetrics(strings.NewReader(text))
	if err != nil || len(all) != 4 || all["go_goroutines"] != 7 {
		t.Fatalf("all: %v %v", all, err)
	}
	some, err := ParseMetrics(strings.NewReader(text), "apiserver_request_total")
	want := map[string]float64{`apiserver_request_total{code="200",resource="leases",verb="PUT"}`: 42}
	if err != nil || !maps.Equal(some, want) {
		t.Fatalf("filtered: %v %v", some, err)
	}
	if _, err := ParseMetrics(strings.NewReader("no_value\n")); err == nil {
		t.Fatal("a line without a value was read")
	}
	if _, err := ParseMetrics(strings.NewReader("x{a=\"b\"} NaNish\n")); err == nil {
		t.Fatal("a bad value was read")
	}
}

func TestLabels(t *testing.T) {
	for _, c := range []struct {
		series string
		want   map[string]string // nil: not well formed
	}{
		{`go_goroutines`, map[string]string{}},
		{`m{}`, map[string]string{}},
		{`m{verb="PUT",resource="leases"}`, map[string]string{"verb": "PUT", "resource": "leases"}},
		{`m{a="",b="x",}`, map[string]string{"a": "", "b": "x"}},
		{`m{a="q\"uo\\te\n"}`, map[string]string{"a": "q\"uo\\te\n"}},
		{`m{a="x,b=\"y"}`, map[string]string{"a": `x,b="y`}},
		{`m{a="x"`, nil},
		{`m{a="x}`, nil},
		{`m{a=x}`, nil},
		{`m{="x"}`, nil},
		{`m{a="x"b="y"}`, nil},
		{`m{a="x\q"}`, nil},
		{`m{a="x\`, nil},
	} {
		got, ok := Labels(c.series)
		if ok != (c.want != nil) || !maps.Equal(got, c.want) {
			t.Errorf("Labels(%s) = %v, %v; want %v", c.series, got, ok, c.want)
		}
	}
}

// FuzzLabels: any series text is either refused or read into labels that,
// written back in the text format, read the same again.
func FuzzLabels(f *testing.F) {
	f.Add(`m{verb="PUT",resource="leases"}`)
	f.Add(`m{a="q\"uo\\te\n",}`)
	f.Add(`m{a="x`)
	f.Fuzz(func(t *testing.T, series string) {
		l, ok := Labels(series)
		if !ok {
			return
		}
		var b strings.Builder
		b.WriteString("m{")
		for k, v := range l {
			b.WriteString(k + `="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `",`)
		}
		b.WriteString("}")
		again, ok := Labels(b.String())
		if !ok || !maps.Equal(l, again) {
			t.Fatalf("%q read as %v, written back as %q, read again as %v %v", series, l, b.String(), again, ok)
		}
	})
}

// TestGet: the body of a 200 within the limit; an error naming the status
// otherwise, or when the body is longer than the limit.
func TestGet(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/missing" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, "0123456789")
	}))
	defer srv.Close()
	for _, tc := range []struct {
		path    string
		limit   int64
		want    string
		wantErr string
	}{
		{"/", 10, "0123456789", ""},
		{"/", 100, "0123456789", ""},
		{"/", 9, "", "longer than 9 bytes"},
		{"/missing", 100, "", "404 Not Found"},
	} {
		b, err := Get(t.Context(), srv.URL+tc.path, tc.limit)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Get(%s, %d): %q, %v; want an error with %q", tc.path, tc.limit, b, err, tc.wantErr)
			}
			continue
		}
		if err != nil || string(b) != tc.want {
			t.Errorf("Get(%s, %d): %q, %v; want %q", tc.path, tc.limit, b, err, tc.want)
		}
	}
}
