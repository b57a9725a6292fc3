package provider_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/crabbox/crabbox-go/provider"
)

func TestClassesAndArches(t *testing.T) {
	c := provider.Classes()
	if strings.Join(c, ",") != "tiny,small,standard,fast,large,beast" {
		t.Fatalf("Classes() = %v", c)
	}
	c[0] = "changed"
	if provider.Classes()[0] != provider.ClassTiny {
		t.Fatal("Classes() is not a copy")
	}
	for _, k := range []string{"tiny", "beast"} {
		if !provider.ValidClass(k) {
			t.Errorf("ValidClass(%q) = false", k)
		}
	}
	for _, k := range []string{"", "Tiny", "huge"} {
		if provider.ValidClass(k) {
			t.Errorf("ValidClass(%q) = true", k)
		}
	}
	if !provider.ValidArch("amd64") || !provider.ValidArch("arm64") || provider.ValidArch("x86_64") || provider.ValidArch("") {
		t.Error("ValidArch accepts the wrong set")
	}
	if provider.DefaultArch != provider.ArchAMD64 {
		t.Errorf("DefaultArch = %q", provider.DefaultArch)
	}
}

func TestSanitizeLabelValue(t *testing.T) {
	long := strings.Repeat("a", 70)
	for in, want := range map[string]string{
		"cbx_0123abcd":                "cbx_0123abcd",
		"Jane Doe <jane@example.com>": "Jane-Doe--jane-example.com",
		"--x--":                       "x",
		"@@@":                         "",
		"":                            "",
		long:                          long[:63],
		"ok.value_1-2":                "ok.value_1-2",
		"é":                           "",
	} {
		if got := provider.SanitizeLabelValue(in); got != want {
			t.Errorf("SanitizeLabelValue(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClassifyHTTPStatus(t *testing.T) {
	for status, want := range map[int]error{
		404: provider.ErrNotFound, 409: provider.ErrConflict, 423: provider.ErrConflict,
		429: provider.ErrThrottled, 401: provider.ErrPermission, 403: provider.ErrPermission,
		400: provider.ErrInvalidArgument, 422: provider.ErrInvalidArgument,
		500: provider.ErrUnavailable, 503: provider.ErrUnavailable, 0: provider.ErrUnavailable,
	} {
		if got := provider.ClassifyHTTPStatus(status); !errors.Is(got, want) {
			t.Errorf("ClassifyHTTPStatus(%d) = %v, want %v", status, got, want)
		}
	}
}

func TestCheckMachineTypes(t *testing.T) {
	if err := provider.CheckMachineTypes("small", "arm64", []string{"a", "b"}); err != nil {
		t.Fatalf("valid types: %v", err)
	}
	for name, tc := range map[string]struct {
		class, arch string
		types       []string
	}{
		"unknown class": {"custom", "amd64", []string{"a"}},
		"empty class":   {"", "amd64", []string{"a"}},
		"unknown arch":  {"small", "x86_64", []string{"a"}},
		"no types":      {"small", "amd64", nil},
		"blank type":    {"small", "amd64", []string{"a", " "}},
	} {
		if err := provider.CheckMachineTypes(tc.class, tc.arch, tc.types); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
