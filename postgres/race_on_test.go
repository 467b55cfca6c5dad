//go:build race

package postgres_test

// raceDetector reports a build with the race detector, whose tests run
// several times slower.
const raceDetector = true
