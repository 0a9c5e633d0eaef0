package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"

	"github.com/convergehq/converge/internal/web"
)

// Keys checks the bearer keys callers send: the API key, and the admin
// key of /api/v1/admin/ and of the live page's stop and start buttons.
// The gateway checks its routes with them, and so does the live page
// `converge dev` serves itself in the cluster topology.
type Keys struct {
	api   [sha256.Size]byte
	admin [sha256.Size]byte // of the admin key; zero when the admin API is off
	// hasAdmin says there is an admin key: the zero digest above opens
	// nothing, but this says so without a comparison.
	hasAdmin bool
}

// NewKeys checks the keys and keeps their digests. An empty adminKey turns
// the admin API off; it must differ from apiKey.
func NewKeys(apiKey, adminKey string) (Keys, error) {
	if apiKey == "" {
		return Keys{}, errors.New("API key is empty")
	}
	if adminKey != "" && adminKey == apiKey {
		return Keys{}, errors.New("the admin key must differ from the API key")
	}
	// Comparing digests keeps the comparison constant-time even when the
	// lengths differ, so a caller cannot probe a key's length.
	return Keys{api: sha256.Sum256([]byte(apiKey)), admin: sha256.Sum256([]byte(adminKey)), hasAdmin: adminKey != ""}, nil
}

// RequireKey lets a request through only with the API key.
func (k Keys) RequireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !k.authorized(r.Header.Get("Authorization")) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			web.WriteProblem(w, http.StatusUnauthorized, "missing or invalid bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// RequireAdminKey lets a request through only with the admin key. The API
// key is known but not enough here: 403. Anything else is 401.
func (k Keys) RequireAdminKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		switch {
		case k.hasAdmin && bearerIs(header, k.admin):
			next.ServeHTTP(w, r)
		case !k.hasAdmin:
			web.WriteProblem(w, http.StatusForbidden, "the admin API is off: this gateway has no admin key (--admin-key)")
		case k.authorized(header):
			web.WriteProblem(w, http.StatusForbidden, "the API key does not open the admin API; use the admin key")
		default:
			w.Header().Set("WWW-Authenticate", "Bearer")
			web.WriteProblem(w, http.StatusUnauthorized, "missing or invalid bearer token (the admin key)")
		}
	})
}

// HandleUI serves the live page (package ui) on mux at /ui/: the page
// itself to anyone (nothing in it is secret), its state (/ui/api/) with
// the API key and its stop and start buttons (/ui/api/control) with the
// admin key.
func (k Keys) HandleUI(mux *http.ServeMux, ui http.Handler) {
	mux.Handle("/ui/", ui)
	mux.Handle("/ui/api/", k.RequireKey(ui))
	mux.Handle("/ui/api/control", k.RequireAdminKey(ui))
}

func (k Keys) authorized(header string) bool { return bearerIs(header, k.api) }

// bearerIs reports whether header is "Bearer <token>" with the token whose
// digest is want.
func bearerIs(header string, want [sha256.Size]byte) bool {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	token = strings.TrimLeft(token, " ")
	if token == "" {
		return false
	}
	got := sha256.Sum256([]byte(token))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}
