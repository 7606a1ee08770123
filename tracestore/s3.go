package tracestore

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/distribution/reference"

	"github.com/coldtrace/coldtrace/trace"
)

// keyTime is the start time in a key: fixed width, so that keys sort by time.
const keyTime = "20060102T150405.000000000Z"

// Bucket is a Store in an S3-compatible bucket, under a prefix. Its keys can be listed by
// workload and time: PREFIX/workload/<repository>/<digest>/<start>-<node>-<container>.json.gz.
// Retention in a bucket is the bucket's own lifecycle rule, not the agent's.
type Bucket struct {
	client         *s3.Client
	bucket, prefix string
	node           string

	mu   sync.Mutex
	keys map[string]string // trace ID → key, as the last List saw them
}

var _ Store = (*Bucket)(nil)

// OpenBucket opens s3://BUCKET/PREFIX. The credentials and the region come from the AWS
// SDK's usual chain (environment, shared files, instance roles); the URL's query may name
// endpoint=URL (MinIO, SeaweedFS, Ceph RGW), region=NAME and path_style=true. node names
// the node in the keys of the traces that Put writes.
func OpenBucket(ctx context.Context, rawURL, node string) (*Bucket, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("trace store %q: not s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME&path_style=true]", rawURL)
	}
	q := u.Query()
	for k := range q {
		if k != "endpoint" && k != "region" && k != "path_style" {
			return nil, fmt.Errorf("trace store %q: unknown parameter %q (endpoint, region, path_style)", rawURL, k)
		}
	}
	pathStyle := false
	if s := q.Get("path_style"); s != "" {
		if pathStyle, err = strconv.ParseBool(s); err != nil {
			return nil, fmt.Errorf("trace store %q: path_style=%q is not a boolean", rawURL, s)
		}
	}
	var load []func(*config.LoadOptions) error
	if r := q.Get("region"); r != "" {
		load = append(load, config.WithRegion(r))
	}
	cfg, err := config.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, fmt.Errorf("trace store %q: %w", rawURL, err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1" // what S3-compatible servers expect when none is set
	}
	client := s3.NewFromConfig(cfg, func(o *s3.Options) {
		if ep := q.Get("endpoint"); ep != "" {
			o.BaseEndpoint = aws.String(ep)
		}
		o.UsePathStyle = pathStyle
		// Uploads are retried by the spool with its own backoff; the SDK's retries would
		// only hold the spool's loop.
		o.RetryMaxAttempts = 1
	})
	return &Bucket{client: client, bucket: u.Host, prefix: strings.Trim(u.Path, "/"), node: node, keys: map[string]string{}}, nil
}

// errNotTrace marks an object under the prefix whose head is not a trace's.
var errNotTrace = errors.New("not a trace")

// Key is where Put stores t given as name (<namespace>/<container id>).
func (b *Bucket) Key(name string, t *trace.Trace) string {
	repo, digest := "-", "-"
	w := t.Workload
	if n, err := reference.ParseNormalizedNamed(w.Image); err == nil {
		repo = reference.TrimNamed(n).String()
		if d, ok := n.(reference.Digested); ok && w.ImageDigest == "" {
			digest = d.Digest().String()
		}
	}
	if w.ImageDigest != "" {
		digest = w.ImageDigest
	}
	node := cmp.Or(b.node, t.Host.Hostname, "-")
	file := t.Start.UTC().Format(keyTime) + "-" + strings.ReplaceAll(node, "/", "_") + "-" + path.Base(name) + suffix
	return path.Join(b.prefix, "workload", repo, digest, file)
}

// Put uploads t under Key(name, t).
func (b *Bucket) Put(ctx context.Context, name string, t *trace.Trace) (string, error) {
	if err := CheckName(name); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	if err := trace.Write(&buf, t, true); err != nil {
		return "", err
	}
	key := b.Key(name, t)
	return b.url(key), b.upload(ctx, key, buf.Bytes())
}

func (b *Bucket) upload(ctx context.Context, key string, body []byte) error {
	_, err := b.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: &b.bucket, Key: &key, Body: bytes.NewReader(body),
		ContentLength: aws.Int64(int64(len(body))), ContentType: aws.String("application/gzip"),
	})
	if err != nil {
		return fmt.Errorf("upload %s: %w", b.url(key), err)
	}
	return nil
}

func (b *Bucket) url(key string) string { return "s3://" + b.bucket + "/" + key }

// List describes the traces under the prefix that f matches, in the order of their start.
// The start in each key bounds f's Since and Until before any object is read; the rest
// of f is matched on each trace's head.
func (b *Bucket) List(ctx context.Context, f Filter) ([]Entry, error) {
	var out []Entry
	err := b.walk(ctx, f, func(o s3types.Object) error {
		e, err := b.readEntry(ctx, *o.Key, aws.ToInt64(o.Size), aws.ToTime(o.LastModified))
		if errors.Is(err, errNotTrace) || errors.Is(err, ErrNotFound) {
			return nil // not a trace, or removed since the listing: as a Dir, list the others
		}
		if err != nil {
			return err
		}
		if f.Match(*e) {
			out = append(out, *e)
		}
		return nil
	})
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(a.Start.Compare(b.Start), strings.Compare(a.Name, b.Name))
	})
	return out, err
}

// walk calls fn for each trace object under the prefix whose key's start f may select.
func (b *Bucket) walk(ctx context.Context, f Filter, fn func(s3types.Object) error) error {
	prefix := b.prefix
	if prefix != "" {
		prefix += "/"
	}
	p := s3.NewListObjectsV2Paginator(b.client, &s3.ListObjectsV2Input{Bucket: &b.bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list %s: %w", b.url(prefix), err)
		}
		for _, o := range page.Contents {
			base := path.Base(aws.ToString(o.Key))
			if !strings.HasSuffix(base, suffix) {
				continue
			}
			if start, err := time.Parse(keyTime, base[:min(len(base), len(keyTime))]); err == nil && !f.within(start) {
				continue // outside [Since, Until)
			}
			if err := fn(o); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *Bucket) readEntry(ctx context.Context, key string, size int64, written time.Time) (*Entry, error) {
	e := &Entry{Name: key, Size: size, Written: written}
	r, err := b.get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if err := readHead(r, e); err != nil {
		return nil, fmt.Errorf("%s: %w: %v", b.url(key), errNotTrace, err)
	}
	b.mu.Lock()
	b.keys[e.ID] = key
	b.mu.Unlock()
	return e, nil
}

func (b *Bucket) get(ctx context.Context, key string) (io.ReadCloser, error) {
	out, err := b.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.bucket, Key: &key})
	var nk *s3types.NoSuchKey
	if errors.As(err, &nk) {
		return nil, fmt.Errorf("%s: %w", b.url(key), ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", b.url(key), err)
	}
	return out.Body, nil
}

// Open reads the trace whose ID is id, as a List found it (listing the bucket if none did).
func (b *Bucket) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	b.mu.Lock()
	key, ok := b.keys[id]
	b.mu.Unlock()
	if !ok {
		if _, err := b.List(ctx, Filter{}); err != nil {
			return nil, err
		}
		b.mu.Lock()
		key, ok = b.keys[id]
		b.mu.Unlock()
	}
	if !ok {
		return nil, fmt.Errorf("trace %q: %w", id, ErrNotFound)
	}
	return b.get(ctx, key)
}

// Each reads the traces under the prefix that f matches, one at a time in the order of
// their keys, each object read once: memory holds one trace, whatever their number.
func (b *Bucket) Each(ctx context.Context, f Filter, fn func(*trace.Trace) error) error {
	return b.walk(ctx, f, func(o s3types.Object) error {
		r, err := b.get(ctx, *o.Key)
		if err != nil {
			return err
		}
		t, err := trace.Read(r)
		r.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", b.url(*o.Key), err)
		}
		if !f.Match(Entry{Workload: t.Workload, Start: t.Start}) {
			return nil
		}
		return fn(t)
	})
}
