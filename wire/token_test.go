package wire

import (
	"reflect"
	"strings"
	"testing"
)

func tokenObject(items ...Token) Object {
	return Object{Kind: KindToken, UID: "6f1c", Namespace: "default", Name: "web-1", Version: "1700000000.1700003607.a1b2c3",
		Token: &PodTokens{Items: items}}
}

func TestTokenObjectRoundTrip(t *testing.T) {
	o := tokenObject(Token{Volume: "kube-api-access-x", Path: "token", Token: "eyJhbGciOi.payload.sig", Expires: 1700003607})
	sy := &Sync{Upserts: []Object{o}, Deletes: []ObjectRef{{Kind: KindToken, UID: "0ld"}}}
	b, err := Encode(TypeSync, 0, sy)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	var got Sync
	if err := f.DecodeBody(&got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&got, sy) {
		t.Fatalf("round trip: %+v", got)
	}
	v := ObjectVersion{Kind: KindToken, UID: "6f1c", Version: o.Version}
	if err := v.Validate(); err != nil {
		t.Errorf("token object version: %v", err)
	}
	if KindToken.String() != "token" {
		t.Errorf("KindToken is %q", KindToken)
	}
}

func TestTokenObjectValidate(t *testing.T) {
	ok := Token{Volume: "v", Path: "token", Token: "jwt", Expires: 1}
	for _, tc := range []struct {
		name string
		o    Object
		want string
	}{
		{"no items", tokenObject(), "0 items"},
		{"no volume", tokenObject(Token{Path: "token", Token: "jwt", Expires: 1}), "token: volume missing"},
		{"no path", tokenObject(Token{Volume: "v", Token: "jwt", Expires: 1}), "token: path missing"},
		{"no token", tokenObject(Token{Volume: "v", Path: "token", Expires: 1}), "token v/token missing"},
		{"huge token", tokenObject(Token{Volume: "v", Path: "token", Token: strings.Repeat("x", 17<<10), Expires: 1}), "limit"},
		{"no expiry", tokenObject(Token{Volume: "v", Path: "token", Token: "jwt"}), "no expiry"},
		{"token body on a pod kind", func() Object { o := tokenObject(ok); o.Kind = KindPod; return o }(), "does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "jwt") {
				t.Errorf("error %q shows the token", err)
			}
		})
	}
	if o := tokenObject(ok); o.Validate() != nil {
		t.Errorf("valid token object: %v", o.Validate())
	}
}
