package pods

import (
	"context"
	"encoding/base64"
	"fmt"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"outpost.dev/wire"
)

func TestSecretObjectPullAuths(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name    string
		typ     corev1.SecretType
		data    map[string][]byte
		want    []wire.PullAuth
		wantErr string
	}{
		{name: "dockerconfigjson, username and password, auth wins", typ: corev1.SecretTypeDockerConfigJson,
			data: map[string][]byte{".dockerconfigjson": []byte(`{"auths":{
				"reg.local:5000":{"username":"u","password":"pw-one","email":"x@y"},
				"https://index.docker.io/v1/":{"username":"ignored","auth":"` + b64("hub:pw:with:colons") + `"}}}`)},
			want: []wire.PullAuth{{Registry: "https://index.docker.io/v1/", Username: "hub", Password: "pw:with:colons"},
				{Registry: "reg.local:5000", Username: "u", Password: "pw-one"}}},
		{name: "legacy dockercfg", typ: corev1.SecretTypeDockercfg,
			data: map[string][]byte{".dockercfg": []byte(`{"*.corp.example":{"auth":"` + b64("a:pw-two") + `"}}`)},
			want: []wire.PullAuth{{Registry: "*.corp.example", Username: "a", Password: "pw-two"}}},
		{name: "opaque secret untouched", typ: corev1.SecretTypeOpaque,
			data: map[string][]byte{".dockerconfigjson": []byte(`{"auths":{"r":{"username":"u","password":"p"}}}`)}},
		{name: "bad JSON, secret not quoted", typ: corev1.SecretTypeDockerConfigJson,
			data:    map[string][]byte{".dockerconfigjson": []byte(`{"auths":{"r":{"password":"hunter2"`)},
			wantErr: "default/pull (kubernetes.io/dockerconfigjson): key .dockerconfigjson: not a Docker config.json: invalid JSON"},
		{name: "auth not base64", typ: corev1.SecretTypeDockerConfigJson,
			data:    map[string][]byte{".dockerconfigjson": []byte(`{"auths":{"r":{"auth":"hunter2!"}}}`)},
			wantErr: `registry "r": auth is not base64`},
		{name: "missing key", typ: corev1.SecretTypeDockercfg, wantErr: "key .dockercfg: missing or empty"},
		{name: "too many registries", typ: corev1.SecretTypeDockercfg,
			data: map[string][]byte{".dockercfg": func() []byte {
				var parts []string
				for i := range maxPullAuths + 1 {
					parts = append(parts, fmt.Sprintf(`"r%d":{}`, i))
				}
				return []byte("{" + strings.Join(parts, ",") + "}")
			}()},
			wantErr: "257 registries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "pull", Namespace: "default", UID: "u1", ResourceVersion: "3"},
				Type: tc.typ, Data: tc.data}
			o := SecretObject(s)
			if err := o.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			if !reflect.DeepEqual(o.Secret.PullAuths, tc.want) {
				t.Errorf("PullAuths = %v, want %v", o.Secret.PullAuths, tc.want)
			}
			if tc.wantErr == "" && o.Secret.PullAuthError != "" || !strings.Contains(o.Secret.PullAuthError, tc.wantErr) {
				t.Errorf("PullAuthError = %q, want %q", o.Secret.PullAuthError, tc.wantErr)
			}
			if strings.Contains(o.Secret.PullAuthError, "hunter2") {
				t.Errorf("PullAuthError %q shows the secret", o.Secret.PullAuthError)
			}
			if !reflect.DeepEqual(o.Secret.Data, tc.data) || o.Secret.Type != string(tc.typ) {
				t.Errorf("data or type changed: %v %q", o.Secret.Data, o.Secret.Type)
			}
			for _, a := range o.Secret.PullAuths {
				for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%+v", o.Secret.PullAuths), fmt.Sprintf("%#v", a)} {
					if a.Password != "" && strings.Contains(s, a.Password) {
						t.Errorf("%q shows the password", s)
					}
				}
			}
		})
	}
}

// A pod's imagePullSecrets reach the agent by name, and the relay watches
// them like every Secret the pod references.
func TestTranslateImagePullSecrets(t *testing.T) {
	p := defaulted()
	p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}, {Name: ""}, {Name: "other"}}
	wp, err := Translate(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(wp.ImagePullSecrets, []string{"regcred", "other"}) {
		t.Errorf("ImagePullSecrets = %v", wp.ImagePullSecrets)
	}
	var secrets []string
	for _, r := range Refs(p) {
		if r.Kind == wire.KindSecret {
			secrets = append(secrets, r.Name)
		}
	}
	if !reflect.DeepEqual(secrets, []string{"regcred", "other"}) {
		t.Errorf("watched secrets %v", secrets)
	}
}

// The session sends a pod's pull secret with its logins read, and sends
// it again, re-read, when it changes.
func TestSessionSendsPullSecret(t *testing.T) {
	ctx := context.Background()
	cfgJSON := func(pw string) []byte {
		return []byte(`{"auths":{"reg.local:5000":{"auth":"` + base64.StdEncoding.EncodeToString([]byte("edge:"+pw)) + `"}}}`)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "regcred", Namespace: "default", UID: "uid-regcred", ResourceVersion: "5"},
		Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: cfgJSON("pw-1")}}
	client, _ := withTokens(fake.NewClientset(edgeNode("edge-1"), sec,
		testPod("web", "edge-1", "4", func(p *corev1.Pod) {
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
		})))
	rec := &recorder{frames: make(chan wire.Sync, 16)}
	s := Start(ctx, Config{Client: client, Node: "edge-1", Send: rec.send})
	defer s.Stop()

	secretIn := func(sy wire.Sync) *wire.Object {
		for i := range sy.Upserts {
			if sy.Upserts[i].Kind == wire.KindSecret {
				return &sy.Upserts[i]
			}
		}
		return nil
	}
	first := rec.next(t)
	got := secretIn(first)
	if got == nil || got.Name != "regcred" {
		t.Fatalf("initial sync %v: no pull secret", summary(first))
	}
	want := []wire.PullAuth{{Registry: "reg.local:5000", Username: "edge", Password: "pw-1"}}
	if !reflect.DeepEqual(got.Secret.PullAuths, want) || got.Secret.PullAuthError != "" {
		t.Fatalf("pull auths %v (error %q), want %v", got.Secret.PullAuths, got.Secret.PullAuthError, want)
	}
	for _, u := range first.Upserts {
		if u.Kind == wire.KindPod && !reflect.DeepEqual(u.Pod.ImagePullSecrets, []string{"regcred"}) {
			t.Errorf("pod's imagePullSecrets %v", u.Pod.ImagePullSecrets)
		}
	}

	sec = sec.DeepCopy()
	sec.ResourceVersion, sec.Data[corev1.DockerConfigJsonKey] = "6", cfgJSON("pw-2")
	if _, err := client.CoreV1().Secrets("default").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		d := rec.next(t)
		if got := secretIn(d); got != nil {
			if got.Version != "6" || len(got.Secret.PullAuths) != 1 || got.Secret.PullAuths[0].Password != "pw-2" {
				t.Fatalf("delta %v: %v", summary(d), got.Secret.PullAuths)
			}
			break
		}
	}
}
