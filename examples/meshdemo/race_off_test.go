//go:build !race

package main_test

// raceEnabled: the tests run without the race detector.
const raceEnabled = false
