package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEchoHandler(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, method, body string
		wantCode           int
		want               echoResponse
	}{
		{name: "enqueue-like", method: http.MethodPost, body: `{"payload":{"resourceType":"t","resourceId":"r","partitionKey":"p","payloadEncoding":"json","body":"AAE="}}`,
			wantCode: http.StatusOK, want: echoResponse{Success: true}},
		{name: "complete-like", method: http.MethodPost, body: `{"ownershipToken":{"sequenceId":42,"attempt":1,"leaseId":"x"}}`,
			wantCode: http.StatusOK, want: echoResponse{Success: true, SequenceID: 42}},
		{name: "bad JSON", method: http.MethodPost, body: `{"payload":`, wantCode: http.StatusBadRequest},
		{name: "GET", method: http.MethodGet, wantCode: http.StatusMethodNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			echoHandler().ServeHTTP(rec, httptest.NewRequest(tt.method, "/echo", strings.NewReader(tt.body)))
			require.Equal(t, tt.wantCode, rec.Code, rec.Body.String())
			if tt.wantCode != http.StatusOK {
				return
			}
			assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			var got echoResponse
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
			tt.want.Bytes = len(tt.body)
			assert.Equal(t, tt.want, got)
		})
	}
}
