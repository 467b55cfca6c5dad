package resourcelease

import "context"

// EnqueueAdmission decides how many of n items about to be enqueued may go
// ahead now: the first admitted of them; the rest are refused, each with
// refusal (typically an ErrRateLimited carrying its retry hint). It is how a
// limit that HTTP middleware applies per request (a rate limiter per caller)
// reaches the items of one enqueueBatch, so that a batch is charged per item
// and a partly admitted batch enqueues what it may, rather than all or
// nothing.
type EnqueueAdmission func(n int) (admitted int, refusal error)

type admissionKey struct{}

// WithEnqueueAdmission returns a copy of ctx that carries admit.
// LocalDispatcher.EnqueueBatch charges its items against it before it
// enqueues any.
func WithEnqueueAdmission(ctx context.Context, admit EnqueueAdmission) context.Context {
	return context.WithValue(ctx, admissionKey{}, admit)
}

// EnqueueAdmissionFrom returns the admission ctx carries, or nil. A
// Dispatcher of one's own calls it to honour the limit as LocalDispatcher
// does.
func EnqueueAdmissionFrom(ctx context.Context) EnqueueAdmission {
	a, _ := ctx.Value(admissionKey{}).(EnqueueAdmission)
	return a
}

// admitItems charges items against ctx's admission, if any: it returns the
// admitted prefix and, for the rest, their refusal.
func admitItems(ctx context.Context, n int) (admitted int, refusal error) {
	admit := EnqueueAdmissionFrom(ctx)
	if admit == nil || n == 0 {
		return n, nil
	}
	k, refusal := admit(n)
	k = max(0, min(k, n))
	if k < n && refusal == nil {
		refusal = ErrRateLimited
	}
	return k, refusal
}
