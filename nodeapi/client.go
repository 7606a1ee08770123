package nodeapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/coldtrace/coldtrace/trace"
)

// Fetch reads traces from an agent's API. u is the agent's address with an optional
// listing query (http://node:9470/?namespace=prod&pod=llm-0: every trace the filters
// select), its listing (http://node:9470/api/v1/traces?...), or one trace
// (http://node:9470/api/v1/traces/ID). token is the bearer token.
func Fetch(ctx context.Context, client *http.Client, u, token string) ([]*trace.Trace, error) {
	base, err := url.Parse(u)
	if err != nil {
		return nil, err
	}
	if base.Scheme != "http" && base.Scheme != "https" || base.Host == "" {
		return nil, fmt.Errorf("%s: want an http:// or https:// URL of an agent", u)
	}
	get := func(path string, query string) (*http.Response, error) {
		v := *base
		v.Path, v.RawPath, v.RawQuery = path, "", query
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.String(), nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			defer resp.Body.Close()
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			return nil, fmt.Errorf("GET %s: %s: %s", v.String(), resp.Status, strings.TrimSpace(string(msg)))
		}
		return resp, nil
	}
	one := func(id string) (*trace.Trace, error) {
		resp, err := get(TracesPath+"/"+url.PathEscape(id), "")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		t, err := trace.Read(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("trace %s from %s: %w", id, base.Host, err)
		}
		return t, nil
	}

	p := strings.TrimSuffix(base.Path, "/")
	if id, ok := strings.CutPrefix(p, TracesPath+"/"); ok {
		t, err := one(id)
		if err != nil {
			return nil, err
		}
		return []*trace.Trace{t}, nil
	}
	if p != "" && p != TracesPath {
		return nil, fmt.Errorf("%s: not the address of an agent, its listing (%s) or a trace (%s/ID)", u, TracesPath, TracesPath)
	}
	resp, err := get(TracesPath, base.RawQuery)
	if err != nil {
		return nil, err
	}
	var l List
	err = json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&l)
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("the listing of %s: %w", base.Host, err)
	}
	out := make([]*trace.Trace, 0, len(l.Traces))
	for _, e := range l.Traces {
		t, err := one(e.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}
