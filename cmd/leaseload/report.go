package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// report is the whole run's report; -json prints it as it is.
type report struct {
	Mode        string  `json:"mode"` // "self" or "target"
	Storage     string  `json:"storage,omitempty"`
	Synchronous string  `json:"synchronous,omitempty"`
	Service     string  `json:"service,omitempty"`
	Namespace   string  `json:"namespace"`
	Concurrency int     `json:"concurrency"`
	DurationSec float64 `json:"durationLimitSeconds"`
	CycleLimit  int64   `json:"cycleLimit,omitempty"`
	WarmupSec   float64 `json:"warmupSeconds"`
	WaitMs      int64   `json:"waitMs"`
	GoVersion   string  `json:"goVersion"`
	Platform    string  `json:"platform"`
	GOMAXPROCS  int     `json:"gomaxprocs"`
	NumCPU      int     `json:"numCPU"`
	// Phases are the echo ceiling (unless -echo=false), then leasemesh.
	Phases []*phaseReport `json:"phases"`
	// LeasemeshToEcho is leasemesh's per-item RPCs/s over the echo
	// ceiling's.
	LeasemeshToEcho float64 `json:"leasemeshToEchoRatio,omitempty"`
	// BatchSize is -batch; BatchToPerItem is the batch phase's cycles/s over
	// the per-item phase's.
	BatchSize      int     `json:"batchSize,omitempty"`
	BatchToPerItem float64 `json:"batchToPerItemRatio,omitempty"`
	Interrupted    bool    `json:"interrupted,omitempty"`
	// OK is true when no RPC failed (warmups included) and the run was not
	// interrupted; the exit status is 0 exactly then.
	OK bool `json:"ok"`
}

// phaseReport is one phase's results. Counts are of successful RPCs, except
// that empty leases are counted apart (EmptyLeases) and not in RPCs; Errors
// are the failed RPCs.
type phaseReport struct {
	Name           string  `json:"name"` // "echo", "leasemesh" or "leasemesh-batch"
	URL            string  `json:"url"`
	ElapsedSeconds float64 `json:"elapsedSeconds"`
	// StoppedBy is "duration", "cycles", "max-errors" or "interrupted".
	StoppedBy     string  `json:"stoppedBy"`
	RPCs          int64   `json:"rpcs"`
	RPCsPerSecond float64 `json:"rpcsPerSecond"`
	// Cycles and CyclesPerSecond are nil for the echo phase.
	Cycles          *int64   `json:"cycles,omitempty"`
	CyclesPerSecond *float64 `json:"cyclesPerSecond,omitempty"`
	// EmptyLeases are leases that found nothing within waitMs (another
	// consumer of a -target took the item): successes, left out of the
	// lease percentiles.
	EmptyLeases int64 `json:"emptyLeases,omitempty"`
	// ForeignLeases are leases of items leaseload did not enqueue (a
	// -target with other producers); they were completed like its own.
	ForeignLeases  int64            `json:"foreignLeases,omitempty"`
	Errors         int64            `json:"errors"`
	ErrorsByStatus map[string]int64 `json:"errorsByStatus,omitempty"`
	// ErrorSamples holds the first error message of each status.
	ErrorSamples map[string]string `json:"errorSamples,omitempty"`
	WarmupErrors int64             `json:"warmupErrors,omitempty"`
	// Procedures has one row per procedure, then "all" (every successful
	// RPC of the phase) and, for leasemesh, "cycle" (enqueue start to
	// complete end).
	Procedures []*latencyReport `json:"procedures"`
}

// latencyReport is one row of latencies, in milliseconds.
type latencyReport struct {
	Procedure string  `json:"procedure"`
	Count     int64   `json:"count"`
	Errors    int64   `json:"errors"`
	MeanMs    float64 `json:"meanMs"`
	P50Ms     float64 `json:"p50Ms"`
	P90Ms     float64 `json:"p90Ms"`
	P99Ms     float64 `json:"p99Ms"`
	MaxMs     float64 `json:"maxMs"`
}

// Phase names.
const (
	phasePerItem = "leasemesh"
	phaseBatch   = "leasemesh-batch"
)

// phase returns the phase called name, or nil.
func (rep *report) phase(name string) *phaseReport {
	for _, p := range rep.Phases {
		if p.Name == name {
			return p
		}
	}
	return nil
}

// Row names besides the procedures.
const (
	rowAll   = "all"
	rowCycle = "cycle"
)

func latencyRow(name string, s *histSnapshot, errs int64) *latencyReport {
	return &latencyReport{
		Procedure: name, Count: int64(s.n), Errors: errs,
		MeanMs: ms(s.mean()), P50Ms: ms(s.quantile(0.50)), P90Ms: ms(s.quantile(0.90)),
		P99Ms: ms(s.quantile(0.99)), MaxMs: ms(time.Duration(s.max)),
	}
}

// ms converts d to milliseconds, rounded to the nanosecond.
func ms(d time.Duration) float64 { return math.Round(float64(d)) / 1e6 }

// summarise turns a phase's recorder into its report.
func summarise(p phaseSpec, r *recorder, elapsed time.Duration, why string, warmupErrs int64) *phaseReport {
	pr := &phaseReport{
		Name: p.name, URL: p.url, ElapsedSeconds: elapsed.Seconds(), StoppedBy: why,
		Errors: r.nerr.Load(), WarmupErrors: warmupErrs, EmptyLeases: int64(r.emptyLease.n.Load()),
		ForeignLeases: r.foreign.Load(),
	}
	all := &histSnapshot{}
	perStatus := map[string]int64{}
	for _, proc := range p.procs {
		s := r.procs[proc].snapshot()
		all.merge(s)
		var errs int64
		for st, n := range r.errs[proc] {
			errs += n
			perStatus[string(st)] += n
		}
		pr.Procedures = append(pr.Procedures, latencyRow(proc, s, errs))
	}
	pr.Procedures = append(pr.Procedures, latencyRow(rowAll, all, pr.Errors))
	pr.RPCs = int64(all.n)
	secs := elapsed.Seconds()
	if secs > 0 {
		pr.RPCsPerSecond = float64(pr.RPCs) / secs
	}
	if len(p.procs) > 1 {
		c := r.cycle.snapshot()
		n, perSec := int64(c.n), 0.0
		if secs > 0 {
			perSec = float64(n) / secs
		}
		pr.Cycles, pr.CyclesPerSecond = &n, &perSec
		pr.Procedures = append(pr.Procedures, latencyRow(rowCycle, c, 0))
	}
	if len(perStatus) > 0 {
		pr.ErrorsByStatus = perStatus
		pr.ErrorSamples = map[string]string{}
		for st, msg := range r.samples {
			pr.ErrorSamples[string(st)] = msg
		}
	}
	return pr
}

// writeJSON prints rep as indented JSON.
func writeJSON(w io.Writer, rep *report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// writeText prints rep for people.
func writeText(w io.Writer, rep *report) error {
	var b strings.Builder
	switch rep.Mode {
	case modeSelf:
		store := rep.Storage
		if rep.Synchronous != "" {
			store += " (synchronous " + rep.Synchronous + ")"
		}
		fmt.Fprintf(&b, "leaseload -self: in-process dispatcher, storage %s; client and servers share this process\n", store)
	default:
		fmt.Fprintf(&b, "leaseload -target\n")
	}
	limit := fmt.Sprintf("duration %v", secs(rep.DurationSec))
	if rep.CycleLimit > 0 {
		limit = fmt.Sprintf("cycles %d (at most %v)", rep.CycleLimit, secs(rep.DurationSec))
	}
	fmt.Fprintf(&b, "concurrency %d · %s · warmup %v · waitMs %d · %s %s · GOMAXPROCS %d (%d CPUs)\n",
		rep.Concurrency, limit, secs(rep.WarmupSec), rep.WaitMs, rep.GoVersion, rep.Platform, rep.GOMAXPROCS, rep.NumCPU)
	for _, p := range rep.Phases {
		b.WriteString("\n")
		title := "leasemesh"
		switch p.Name {
		case procEcho:
			title = "echo ceiling (bare net/http JSON handler)"
		case phaseBatch:
			title = fmt.Sprintf("leasemesh in batches of %d", rep.BatchSize)
		}
		fmt.Fprintf(&b, "%s  %s\n", title, p.URL)
		fmt.Fprintf(&b, "  measured %.2fs, stopped by %s\n", p.ElapsedSeconds, p.StoppedBy)
		if p.Cycles != nil {
			fmt.Fprintf(&b, "  cycles  %d  %.1f/s", *p.Cycles, *p.CyclesPerSecond)
			if p.Name == phaseBatch && rep.BatchToPerItem > 0 {
				fmt.Fprintf(&b, "  (%.2f× the per-item cycles/s)", rep.BatchToPerItem)
			}
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "  RPCs    %d  %.1f/s", p.RPCs, p.RPCsPerSecond)
		if p.Name == phasePerItem && rep.LeasemeshToEcho > 0 {
			fmt.Fprintf(&b, "  (%.0f%% of the echo ceiling)", 100*rep.LeasemeshToEcho)
		}
		b.WriteString("\n")
		if p.EmptyLeases > 0 {
			fmt.Fprintf(&b, "  empty leases %d (nothing within waitMs)\n", p.EmptyLeases)
		}
		if p.ForeignLeases > 0 {
			fmt.Fprintf(&b, "  foreign leases %d (items leaseload did not enqueue; completed)\n", p.ForeignLeases)
		}
		fmt.Fprintf(&b, "  errors  %d", p.Errors)
		if p.WarmupErrors > 0 {
			fmt.Fprintf(&b, " (and %d during warmup)", p.WarmupErrors)
		}
		b.WriteString("\n")
		for _, st := range slices.Sorted(maps.Keys(p.ErrorsByStatus)) {
			fmt.Fprintf(&b, "    %s: %d, first: %s\n", st, p.ErrorsByStatus[st], p.ErrorSamples[st])
		}
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "  procedure \tok\terrors\tmean\tp50\tp90\tp99\tmax\t")
		for _, l := range p.Procedures {
			fmt.Fprintf(tw, "  %-10s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t\n", l.Procedure, l.Count, l.Errors,
				fmtMs(l.MeanMs), fmtMs(l.P50Ms), fmtMs(l.P90Ms), fmtMs(l.P99Ms), fmtMs(l.MaxMs))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if rep.Interrupted {
		b.WriteString("\ninterrupted: the report covers the load until then\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// fmtMs formats milliseconds with three significant figures or so.
func fmtMs(v float64) string {
	switch {
	case v < 1:
		return fmt.Sprintf("%.0fµs", v*1000)
	case v < 1000:
		return fmt.Sprintf("%.2fms", v)
	default:
		return fmt.Sprintf("%.2fs", v/1000)
	}
}
