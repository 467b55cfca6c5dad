package config_test

import (
	"strings"
	"testing"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
)

func TestPostgresKeys(t *testing.T) {
	for _, tc := range []struct {
		name    string
		file    string
		env     []string
		args    []string
		wantErr string // "" for none
		url     string
		ignored bool
	}{
		{name: "flag", args: []string{"-storage", "postgres", "-postgres-url", "postgres://u:p@db:5432/app"}, url: "postgres://u:p@db:5432/app"},
		{name: "documented form", args: []string{"--meshDemo:storage=POSTGRES", "--meshDemo:postgresUrl=postgresql://db/app"}, url: "postgresql://db/app"},
		{name: "environment", env: []string{"MESHDEMO_meshDemo__storage=postgres", "MESHDEMO_meshDemo__postgresUrl=postgres://db/app"}, url: "postgres://db/app"},
		{name: "no url", args: []string{"-storage", "postgres"}, wantErr: "postgres needs meshDemo:postgresUrl"},
		{name: "other scheme", args: []string{"-storage", "postgres", "-postgres-url", "mysql://u:secret@db/app"}, wantErr: "scheme"},
		{name: "no host", args: []string{"-storage", "postgres", "-postgres-url", "postgres:///app"}, wantErr: "no host"},
		{name: "data directory from the command line", args: []string{"-storage", "postgres", "-postgres-url", "postgres://db/x", "-data-dir", "d"}, url: "postgres://db/x", ignored: true},
		{name: "data directory of the shipped file", file: `{"meshDemo":{"dataDirectory":"mesh-data","storage":"postgres","postgresUrl":"postgres://db/x"}}`, url: "postgres://db/x"},
		{name: "other data directory in the file", file: `{"meshDemo":{"dataDirectory":"elsewhere","storage":"postgres","postgresUrl":"postgres://db/x"}}`, url: "postgres://db/x", ignored: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := load(t, tc.file, tc.env, tc.args...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Fatalf("the error shows the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Storage != config.StoragePostgres || c.PostgresURL != tc.url {
				t.Fatalf("storage %q url %q, want postgres %q", c.Storage, c.PostgresURL, tc.url)
			}
			if got := c.DataDirectoryIgnored(); got != tc.ignored {
				t.Fatalf("DataDirectoryIgnored = %v, want %v", got, tc.ignored)
			}
		})
	}
	c, err := load(t, "", nil, "-storage", "postgres", "-postgres-url", "postgres://u:hunter2@db/x")
	if err != nil {
		t.Fatal(err)
	}
	if r := c.RedactedPostgresURL(); strings.Contains(r, "hunter2") || !strings.Contains(r, "db/x") {
		t.Fatalf("RedactedPostgresURL = %q", r)
	}
}
