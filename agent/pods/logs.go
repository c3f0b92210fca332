package pods

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"outpost.dev/agent/runtime/containerd"
)

// LogPath finds the log of a container of pod namespace/name: the current
// attempt's, or with previous the one before. container may be empty when
// the pod has one container. running reports whether that container still
// runs (for follow: crilog.Options.Done is !running). Open the result with
// crilog.Stream.
func (r *Reconciler) LogPath(ctx context.Context, namespace, pod, container string, previous bool) (path string, running func() bool, err error) {
	if err := checkLogNames(namespace, pod, container); err != nil {
		return "", nil, err
	}
	dirs, _ := filepath.Glob(filepath.Join(r.cfg.LogDir, namespace+"_"+pod+"_*"))
	if len(dirs) == 0 {
		return "", nil, &fs.PathError{Op: "logs", Path: namespace + "/" + pod, Err: fs.ErrNotExist}
	}
	sort.Strings(dirs)
	dir := dirs[len(dirs)-1]
	uid := strings.TrimPrefix(filepath.Base(dir), namespace+"_"+pod+"_")
	if container == "" {
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			return "", nil, fmt.Errorf("pod %s/%s has containers %v: name one", namespace, pod, names)
		}
		container = ents[0].Name()
	}
	files, _ := filepath.Glob(filepath.Join(dir, container, "*.log"))
	var attempts []int
	for _, f := range files {
		if n, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".log")); err == nil {
			attempts = append(attempts, n)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(attempts)))
	i := 0
	if previous {
		i = 1
	}
	if len(attempts) <= i {
		what := "a log"
		if previous {
			what = "a previous terminated container"
		}
		return "", nil, fmt.Errorf("container %s of pod %s/%s has no %s: %w", container, namespace, pod, what, fs.ErrNotExist)
	}
	attempt := strconv.Itoa(attempts[i])
	running = func() bool {
		rt := r.runtime()
		if rt == nil {
			return false
		}
		cs, err := rt.ListLabeled(ctx, labelPodUID, uid)
		if err != nil {
			return ctx.Err() == nil // containerd down: the container may still run
		}
		for _, c := range cs {
			if c.Labels[labelContainer] != container || c.Labels[labelAttempt] != attempt {
				continue
			}
			st, err := rt.Status(ctx, c.ID)
			if err != nil {
				return !errors.Is(err, containerd.ErrNotFound) && ctx.Err() == nil
			}
			return st.State == containerd.StateRunning || st.State == containerd.StatePaused
		}
		return false
	}
	return filepath.Join(dir, container, strconv.Itoa(attempts[i])+".log"), running, nil
}
