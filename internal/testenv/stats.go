package testenv

import (
	"math"
	"testing"
)

// Sigmas is how many binomial standard deviations a measured share may
// stray from the expected one: at 4, a correct product fails one check in
// about 16,000, whatever the machine's load did to the sample count.
const Sigmas = 4

// ShareBounds is the range a share measured from n samples may take when
// the expected share is p: p ± Sigmas·sqrt(p(1-p)/n), with the lower end
// lowered by slack for samples the product is allowed to miss (the caller
// says why). Clamped to [0, 1]. Samples of a periodic timer over a periodic
// workload scatter less than independent draws do, so the binomial bound
// errs on the safe side.
func ShareBounds(p float64, n int64, slack float64) (lo, hi float64) {
	if n <= 0 {
		return 0, 1
	}
	d := Sigmas * math.Sqrt(p*(1-p)/float64(n))
	return max(0, p-d-slack), min(1, p+d)
}

// CheckShare reports an error unless hit of n samples is within
// ShareBounds(p, n, slack); what names the share in the message.
func CheckShare(t testing.TB, what string, hit, n int64, p, slack float64) bool {
	t.Helper()
	lo, hi := ShareBounds(p, n, slack)
	if n == 0 {
		t.Errorf("%s: no samples", what)
		return false
	}
	got := float64(hit) / float64(n)
	if got < lo || got > hi {
		t.Errorf("%s: %d of %d samples (%.2f%%), want %.2f%% to %.2f%% (expected %.1f%%, %d binomial standard deviations, %.1f%% allowed missing)",
			what, hit, n, 100*got, 100*lo, 100*hi, 100*p, Sigmas, 100*slack)
		return false
	}
	return true
}
