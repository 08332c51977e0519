package reliability

import (
	"fmt"
	"os"
)

// helperEnv, when set, makes the test binary run as a helper process
// (see runHelper) instead of running tests.
const helperEnv = "RELIABILITY_HELPER"

// runHelper runs the helper named by helperEnv and returns its exit code.
func runHelper() int {
	switch h := os.Getenv(helperEnv); h {
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", h)
		return 2
	}
}
