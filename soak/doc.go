// Package soak holds the soak test: churn against a dispatcher on SQLite,
// sampling the heap, goroutines and open files, failing on growth. Run the
// long version with
//
//	go test ./soak -run TestSoak -soak.duration 10m -timeout 20m -v
package soak
