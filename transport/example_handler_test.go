package transport_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/leasemesh/leasemesh/resourcelease"
	"github.com/leasemesh/leasemesh/transport"
)

// Mount the RPC handler under a path of a mux that already serves other
// routes, and speak the wire protocol to it with plain HTTP, as a yarpc-go
// client does. The admin procedures (drain here) are refused until
// HandlerConfig.Authorize is set.
func ExampleNewHandler() {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	h, err := transport.NewHandler(d, transport.HandlerConfig{Service: "mesh", Namespace: "resourcelease.mesh"})
	if err != nil {
		log.Fatal(err)
	}
	mux.Handle("/yarpc/v1", h)

	srv := httptest.NewServer(mux)
	defer srv.Close()

	send := func(method, procedure, body string) {
		req, err := http.NewRequest(method, srv.URL+"/yarpc/v1", strings.NewReader(body))
		if err != nil {
			log.Fatal(err)
		}
		req.Header.Set("Rpc-Procedure", procedure)
		req.Header.Set("Rpc-Service", "mesh")
		req.Header.Set("Rpc-Caller", "example")
		req.Header.Set("Rpc-Encoding", "json")
		req.Header.Set("Context-TTL-MS", "5000")
		req.Header.Set("Rpc-Accepts-Both-Response-Error", "true")
		res, err := srv.Client().Do(req)
		if err != nil {
			log.Fatal(err)
		}
		out, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		fmt.Printf("%d %s", res.StatusCode, res.Header.Get("Rpc-Status"))
		if res.StatusCode != http.StatusOK {
			fmt.Printf(" %s %s", res.Header.Get("Rpc-Error-Code"), res.Header.Get("Rpc-Error-Name"))
		}
		fmt.Printf(" %s\n", out)
	}
	send(http.MethodPost, "resourcelease.mesh::enqueue",
		`{"payload":{"resourceType":"demo.order","resourceId":"order-0001","partitionKey":"tenant-1","payloadEncoding":"application/json","body":"eyJhIjoxfQ=="}}`)
	send(http.MethodPost, "resourcelease.mesh::stats", "")
	send(http.MethodPost, "resourcelease.mesh::heartbeat", `{}`)
	send(http.MethodPost, "resourcelease.mesh::nope", `{}`)
	send(http.MethodPost, "resourcelease.mesh::drain", `{}`)
	send(http.MethodGet, "resourcelease.mesh::stats", "")

	res, err := srv.Client().Get(srv.URL + "/healthz")
	if err != nil {
		log.Fatal(err)
	}
	health, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	fmt.Println("healthz:", string(health))
	// Output:
	// 200 success {"stats":{"pendingCount":1,"activeLeaseCount":0},"sequenceId":1}
	// 200 success {"pendingCount":1,"activeLeaseCount":0,"deadLetterCount":0,"backpressureActive":false}
	// 400 invalid-argument invalid-argument resourcelease.ownership_token.required {"message":"ownershipToken is required","status":"invalid-argument","code":"resourcelease.ownership_token.required","metadata":{}}
	// 404 not-found not-found resourcelease.transport.unknown_procedure {"message":"unknown procedure \"resourcelease.mesh::nope\"","status":"not-found","code":"resourcelease.transport.unknown_procedure","metadata":{}}
	// 403 permission-denied permission-denied error.resourcelease.admin_not_configured {"message":"resourcelease.mesh::drain is an admin procedure and this handler serves none (see transport.HandlerConfig.Authorize)","status":"permission-denied","code":"error.resourcelease.admin_not_configured","metadata":{}}
	// 405 invalid-argument invalid-argument resourcelease.transport.method_not_allowed {"message":"method GET is not allowed; use POST","status":"invalid-argument","code":"resourcelease.transport.method_not_allowed","metadata":{}}
	// healthz: ok
}

// Protect the handler with one shared bearer token, which holds every role;
// the Client sends it.
func ExampleBearerToken() {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	h, err := transport.NewHandler(d, transport.HandlerConfig{Authorize: transport.BearerToken("s3cret")})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	for _, token := range []string{"", "guess", "s3cret"} {
		c, err := transport.NewClient(srv.URL, transport.ClientConfig{BearerToken: token})
		if err != nil {
			log.Fatal(err)
		}
		_, err = c.Stats(context.Background(), nil)
		if err != nil {
			fmt.Printf("token %q: %s\n", token, resourcelease.StatusOf(err))
		} else {
			fmt.Printf("token %q: ok\n", token)
		}
		_ = c.Close()
	}
	// Output:
	// token "": unauthenticated
	// token "guess": unauthenticated
	// token "s3cret": ok
}

// Give producers, workers and operators tokens of their own: each
// procedure needs its role (transport.RoleOf), the admin token holds every
// role, and every token may read the stats.
func ExampleBearerTokens() {
	d, closeDispatcher := newLocalDispatcher(resourcelease.QueueConfig{})
	defer closeDispatcher()
	h, err := transport.NewHandler(d, transport.HandlerConfig{
		Authorize: transport.BearerTokens(map[transport.Role][]string{
			transport.RoleProducer: {"producer-secret"},
			transport.RoleWorker:   {"worker-secret"},
			transport.RoleAdmin:    {"admin-secret"},
		}),
	})
	if err != nil {
		log.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	calls := []struct{ verb, body string }{
		{"enqueue", `{"payload":{"resourceType":"demo.order","resourceId":"order-1","partitionKey":"tenant-1","payloadEncoding":"application/json"}}`},
		{"lease", `{"waitMs":0}`},
		{"stats", `{}`},
		{"drain", `{}`},
	}
	for _, token := range []string{"producer-secret", "worker-secret", "admin-secret", "guess"} {
		c, err := transport.NewClient(srv.URL, transport.ClientConfig{BearerToken: token})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%-16s", token)
		for _, call := range calls {
			outcome := "ok"
			if _, err := c.Call(context.Background(), "resourcelease::"+call.verb, []byte(call.body)); err != nil {
				outcome = string(resourcelease.StatusOf(err))
			}
			fmt.Printf(" %s=%s", call.verb, outcome)
		}
		fmt.Println()
		_ = c.Close()
	}
	// Output:
	// producer-secret  enqueue=ok lease=permission-denied stats=ok drain=permission-denied
	// worker-secret    enqueue=permission-denied lease=ok stats=ok drain=permission-denied
	// admin-secret     enqueue=ok lease=ok stats=ok drain=ok
	// guess            enqueue=unauthenticated lease=unauthenticated stats=unauthenticated drain=unauthenticated
}
