package app

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/leasemesh/leasemesh/examples/meshdemo/internal/config"
	"github.com/leasemesh/leasemesh/tracing"
)

// defaultOTLPPath is where an OTLP/HTTP collector takes traces, added to an
// otlpEndpoint without a path (as OTEL_EXPORTER_OTLP_ENDPOINT is).
const defaultOTLPPath = "/v1/traces"

// newTracing returns the process's tracing configuration: off without
// cfg.OTLPEndpoint; otherwise an SDK TracerProvider that exports in batches
// over OTLP/HTTP, its resource naming the service and this process's roles.
// shutdown flushes what is buffered and stops the exporter; it is nil when
// tracing is off. The exporter connects lazily, so an unreachable collector
// loses spans (and logs why) but never stops the demo.
func newTracing(ctx context.Context, cfg *config.Config) (tc tracing.Config, shutdown func(context.Context) error, err error) {
	if cfg.OTLPEndpoint == "" {
		return tracing.Config{}, nil, nil
	}
	u, err := url.Parse(cfg.OTLPEndpoint)
	if err != nil {
		return tracing.Config{}, nil, &config.ConfigValidationError{Field: config.Section + ":otlpEndpoint", Err: err}
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = defaultOTLPPath
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(u.String()))
	if err != nil {
		return tracing.Config{}, nil, fmt.Errorf("meshdemo: OTLP exporter for %s: %w", u, err)
	}
	res := resource.NewSchemaless(
		semconv.ServiceName(cfg.ServiceName),
		attribute.String("meshdemo.roles", cfg.Roles.String()),
		attribute.String("meshdemo.namespace", cfg.Namespace),
	)
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tracing.Config{TracerProvider: tp}, tp.Shutdown, nil
}

// otlpTarget is where traces go, for the banner.
func otlpTarget(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil && (u.Path == "" || u.Path == "/") {
		return strings.TrimSuffix(endpoint, "/") + defaultOTLPPath
	}
	return endpoint
}
