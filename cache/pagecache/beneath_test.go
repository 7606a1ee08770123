package pagecache

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// layerDirs builds two sibling roots: root holds a file, a directory, a FIFO and symlinks
// that stay inside or try to leave; other is a root next to it.
func layerDirs(t testing.TB) (root, other string) {
	t.Helper()
	base := t.TempDir()
	root, other = filepath.Join(base, "root"), filepath.Join(base, "other")
	for _, d := range []string{root + "/usr/lib", other} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(root+"/usr/lib/libfoo.so.1", "foo")
	write(other+"/secret", "other root's")
	links := map[string]string{
		"usr/lib/libfoo.so":  "libfoo.so.1",          // relative, inside
		"usr/lib/abs-inside": "/usr/lib/libfoo.so.1", // absolute: means the host's path
		"passwd":             "/etc/passwd",
		"escape":             "../other/secret",
		"deep-escape":        "usr/../../other/secret",
		"self":               "/proc/self/root/etc/passwd",
		"loop":               "loop",
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	return root, other
}

func TestOpenBeneath(t *testing.T) {
	root, _ := layerDirs(t)
	for _, rel := range []string{"usr/lib/libfoo.so.1", "usr/lib/libfoo.so", "./usr/lib//libfoo.so.1"} {
		f, err := OpenBeneath(root, rel)
		if err != nil {
			t.Errorf("OpenBeneath(%q): %v", rel, err)
			continue
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if string(b) != "foo" {
			t.Errorf("OpenBeneath(%q) read %q, want foo", rel, b)
		}
	}
}

func TestOpenBeneathRefuses(t *testing.T) {
	root, other := layerDirs(t)
	for _, rel := range []string{
		"../other/secret",
		"usr/../../other/secret",
		"usr/lib/../libfoo.so.1", // ".." is refused even when it would stay inside
		"/etc/passwd",
		other + "/secret",
		"passwd",             // symlink to /etc/passwd
		"escape",             // symlink to ../other
		"deep-escape",        // symlink up through a directory
		"usr/lib/abs-inside", // absolute symlink: beneath root it would be another file
		"self",               // through /proc
		"usr",                // a directory
		"",
	} {
		f, err := OpenBeneath(root, rel)
		if err == nil {
			f.Close()
			t.Errorf("OpenBeneath(%q) opened %s", rel, f.Name())
			continue
		}
		if !errors.Is(err, ErrRefused) {
			t.Errorf("OpenBeneath(%q): %v, want an ErrRefused", rel, err)
		}
		t.Logf("%q: %v", rel, err)
	}
	// Not a refusal, but an error all the same.
	for _, rel := range []string{"loop", "missing"} {
		if f, err := OpenBeneath(root, rel); err == nil {
			f.Close()
			t.Errorf("OpenBeneath(%q) opened %s", rel, f.Name())
		} else {
			t.Logf("%q: %v", rel, err)
		}
	}
}

func FuzzOpenBeneath(f *testing.F) {
	for _, s := range []string{"usr/lib/libfoo.so", "../other/secret", "/etc/passwd", "escape", "a/./b/../../.."} {
		f.Add(s)
	}
	root, other := layerDirs(f)
	secret, err := os.Stat(filepath.Join(other, "secret"))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, rel string) {
		file, err := OpenBeneath(root, rel)
		if err != nil {
			return
		}
		defer file.Close()
		fi, err := file.Stat()
		if err != nil {
			t.Fatal(err)
		}
		// Only the one regular file inside root may ever be opened.
		if os.SameFile(fi, secret) || fi.Size() != 3 {
			t.Fatalf("OpenBeneath(%q) opened %s (%d bytes), outside the root or not its file", rel, file.Name(), fi.Size())
		}
	})
}
