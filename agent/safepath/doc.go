// Package safepath opens a path beneath a root directory without leaving
// it, whatever a container did to the directories on the way.
//
// A volume's subPath names something inside a directory a container can
// write: it can put a symlink there (to "/", to "../../..", or as a
// parent directory of the subPath) and have the host follow it when the
// path is opened by name. Open resolves the path one component at a time
// beneath the root instead: symlinks that stay beneath the root are
// followed, as a kubelet does; one that is absolute, or climbs above the
// root with "..", makes the open fail with ErrEscape. The result is an
// O_PATH descriptor of the inode found, so what was checked is what the
// caller uses (it bind-mounts /proc/self/fd/N), however the path changes
// afterwards.
//
// The kernel does the walk when it has openat2(2) (Linux 5.6) with
// RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS; on older kernels (ENOSYS) the
// package walks the path itself with O_PATH|O_NOFOLLOW, reading each
// symlink and refusing those that lead out.
package safepath
