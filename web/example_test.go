package web_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/swapbridge/swapbridge/web"
)

// Register mounts the dashboard beside the API on swapd's mux.
func ExampleRegister() {
	mux := http.NewServeMux()
	web.Register(mux)

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/config.json", nil))
	fmt.Println(rec.Code, rec.Body.String())
	// Output: 200 {"demo":false}
}

// In demo mode a DemoSignIn beside the dashboard offers the demo user's
// one-click sign-in once the user exists.
func ExampleDemoSignIn() {
	mux := http.NewServeMux()
	web.Register(mux)
	signIn := &web.DemoSignIn{}
	mux.Handle("GET /ui/config.json", signIn)
	signIn.Set("demo-rider", "t0ken")

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/ui/config.json", nil))
	fmt.Println(rec.Body.String())
	// Output: {"demo":true,"demo_user":"demo-rider","demo_token":"t0ken"}
}
