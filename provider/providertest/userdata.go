package providertest

import "testing"

// userData returns the user-data for a test machine accepting authorizedKey.
func (s *suite) userData(t *testing.T, authorizedKey string) []byte {
	t.Helper()
	if s.h.UserData != nil {
		return s.h.UserData(authorizedKey)
	}
	return renderUserData(t, s.runID, authorizedKey)
}

// renderUserData is replaced by internal/cloudinit rendering once that
// package lands.
func renderUserData(t *testing.T, runID, authorizedKey string) []byte {
	t.Helper()
	t.Fatal("providertest: Harness.UserData is nil and internal/cloudinit is not available yet")
	return nil
}
