package main

import (
	"context"
	"os"
	"strings"
	"testing"
)

// TestRun runs the embedding example end to end: what the README shows works.
func TestRun(t *testing.T) {
	if err := run(context.Background(), t.TempDir(), 5); err != nil {
		t.Fatal(err)
	}
}

// TestReadmeShowsThisExample checks that the README's "Use it in your
// service" is the compiled code between the readme markers of main.go, so
// the README cannot drift from code that builds and runs.
func TestReadmeShowsThisExample(t *testing.T) {
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(src), "\t// readme:start\n")
	snippet, _, ok2 := strings.Cut(rest, "\t// readme:end\n")
	if !ok || !ok2 {
		t.Fatal("main.go has no readme:start / readme:end markers")
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(snippet, "\n"), "\n") {
		lines = append(lines, strings.TrimPrefix(l, "\t"))
	}
	want := strings.Join(lines, "\n")
	if n := len(lines); n > 30 {
		t.Errorf("the README example has %d lines; keep it short", n)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```go\n"+want+"\n```") {
		t.Errorf("README.md does not show examples/embed/main.go's readme section verbatim; it should contain:\n```go\n%s\n```", want)
	}
}
