//! Arranging one notification's changes before they are expired and replayed: new trees
//! described whole from SOURCE (folders moved into them pair into renames), removed trees entry
//! by entry, deepest first, renames into new trees placed after their folder's create (and a new
//! object under the name they leave after them), rename cycles broken through a temporary name,
//! and the paths of removed folders noted while the kernel still holds them.

use super::*;

impl Worker {
    /// A folder that is new in this notification is described whole, from SOURCE, as creates
    /// after its own (what a rescan of it as a known folder found is dropped: a client's
    /// listing told no watcher anything) — except the folders in it that were elsewhere before
    /// (their deletes are in `changes`: moved in, they pair into renames). Run before pairing.
    /// Returns the changes, the new folders' views and their node ids.
    pub(super) fn expand_new_trees(
        &self,
        changes: Vec<Change>,
        views: &mut Vec<(Arc<Node>, View)>,
    ) -> (Vec<Change>, Vec<(Ino, Snapshot)>, HashSet<Ino>) {
        let s = &self.s;
        let moved: HashSet<Key> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Delete { old, .. } => Some(old.key),
                _ => None,
            })
            .collect();
        let created: HashSet<Ino> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Create { new, .. } if new.is_dir() => Some(s.table.ino_for(new.key)),
                _ => None,
            })
            .collect();
        let mut budget = TREE_BUDGET;
        let mut tree_views = Vec::new();
        let mut expanded: Vec<(usize, Vec<Change>)> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            // A folder inside another new one is described by that one.
            if let Change::Create { dir, name, new } = c {
                if new.is_dir() && !created.contains(dir) && !moved.contains(&new.key) {
                    let mut nested = Vec::new();
                    if let Ok(fd) = self.open_child_dir(*dir, name, new.key) {
                        let ino = s.table.ino_for(new.key);
                        self.scan_new_tree(
                            fd.as_fd(),
                            ino,
                            &moved,
                            &mut budget,
                            &mut nested,
                            &mut tree_views,
                        );
                    }
                    expanded.push((i, nested));
                }
            }
        }
        let inside: HashSet<Ino> = tree_views.iter().map(|(ino, _)| *ino).collect();
        if expanded.is_empty() {
            return (changes, tree_views, inside);
        }
        views.retain(|(n, _)| !inside.contains(&n.ino));
        let mut out = Vec::with_capacity(changes.len());
        let mut next = expanded.into_iter().peekable();
        for (i, c) in changes.into_iter().enumerate() {
            let nested = match next.peek() {
                Some((j, _)) if *j == i => next.next().map(|(_, n)| n).unwrap_or_default(),
                _ => Vec::new(),
            };
            // (A name the kernel may hold that is gone stays a delete: it must be expired.)
            if c.names().iter().any(|(d, _)| inside.contains(d))
                && !matches!(c, Change::Delete { .. })
            {
                continue;
            }
            out.push(c);
            out.extend(nested);
        }
        (out, tree_views, inside)
    }

    /// A removed folder's known content goes before it, as deletes, deepest first — but for
    /// what was moved out of it (a rename). Run after pairing.
    pub(super) fn expand_removed_trees(
        &self,
        changes: Vec<Change>,
        views: &mut Vec<(Arc<Node>, View)>,
    ) -> Vec<Change> {
        let moved: HashSet<Key> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Rename { old, .. } => Some(old.key),
                _ => None,
            })
            .collect();
        let mut budget = TREE_BUDGET;
        let mut removed_dirs = Vec::new();
        let mut expanded: Vec<(usize, Vec<Change>)> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            if let Change::Delete { old, .. } = c {
                if old.is_dir() {
                    let mut nested = Vec::new();
                    self.removed_tree(old, &moved, &mut budget, &mut nested, &mut removed_dirs);
                    expanded.push((i, nested));
                }
            }
        }
        if expanded.is_empty() {
            return changes;
        }
        // A removed folder is still readable through the fd the overlay holds: its own rescan
        // found it empty. Its content's deletes are the expansion's, in post-order.
        let removed: HashSet<Ino> = removed_dirs.into_iter().collect();
        views.retain(|(n, _)| !removed.contains(&n.ino));
        let mut out = Vec::with_capacity(changes.len());
        let mut next = expanded.into_iter().peekable();
        for (i, c) in changes.into_iter().enumerate() {
            let nested = match next.peek() {
                Some((j, _)) if *j == i => next.next().map(|(_, n)| n).unwrap_or_default(),
                _ => Vec::new(),
            };
            if !matches!(c, Change::Rename { .. })
                && c.names().iter().any(|(d, _)| removed.contains(d))
            {
                continue;
            }
            out.extend(nested);
            out.push(c);
        }
        out
    }

    /// Renames in a cycle (`a` and `b` swapped) cannot be replayed one by one: the first of
    /// each goes through a hidden temporary name instead (`a` → tmp, …, tmp → `b`), as a local
    /// swap is made.
    pub(super) fn break_rename_cycles(&self, changes: Vec<Change>) -> Vec<Change> {
        let rename_at = |c: &Change| match c {
            Change::Rename { from, name, .. } => Some((*from, name.clone())),
            _ => None,
        };
        let Some(last) = changes.iter().rposition(|c| rename_at(c).is_some()) else {
            return changes;
        };
        let mut out = Vec::with_capacity(changes.len() + 1);
        let mut tail = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            if let Change::Rename {
                from,
                name,
                to,
                newname,
                old,
                replaced,
            } = c
            {
                let blocked = changes[i + 1..]
                    .iter()
                    .filter_map(rename_at)
                    .any(|(f, n)| f == *to && n == *newname);
                if blocked {
                    if let Ok(tmp) = self.temporary_name(*from, name) {
                        out.push(Change::Rename {
                            from: *from,
                            name: name.clone(),
                            to: *from,
                            newname: tmp.clone(),
                            old: *old,
                            replaced: None,
                        });
                        tail.push(Change::Rename {
                            from: *from,
                            name: tmp,
                            to: *to,
                            newname: newname.clone(),
                            old: *old,
                            replaced: *replaced,
                        });
                    } else {
                        out.push(c.clone());
                    }
                    if i == last {
                        out.append(&mut tail);
                    }
                    continue;
                }
            }
            out.push(c.clone());
            if i == last {
                out.append(&mut tail);
            }
        }
        out
    }

    /// The path of every removed folder, parents first, while the kernel still holds them.
    pub(super) fn note_removed_paths(&self, changes: &[Change]) {
        let mut paths = self.removed_paths.borrow_mut();
        paths.clear();
        // Deletes are deepest first: reversed, a folder's parent comes before it.
        for c in changes.iter().rev() {
            let Change::Delete { dir, name, old } = c else {
                continue;
            };
            if !old.is_dir() {
                continue;
            }
            let p = match self.s.try_path_of(*dir, Some(name)) {
                Ok(p) => p,
                Err(_) => match paths.get(dir) {
                    Some(parent) => parent.join(name),
                    None => continue,
                },
            };
            paths.insert(self.s.table.ino_for(old.key), p);
        }
    }

    /// A rename into a folder this notification creates (`mkdir e; mv b e/b`) comes right after
    /// that folder's create, and stands for what the folder's expansion found at its
    /// destination (the name, and for a folder everything below it).
    pub(super) fn renames_into_new_trees(
        &self,
        mut out: Vec<Change>,
        inside: &HashSet<Ino>,
    ) -> Vec<Change> {
        let s = &self.s;
        let into = |c: &Change| matches!(c, Change::Rename { to, .. } if inside.contains(to));
        if !out.iter().any(into) {
            return out;
        }
        let (renames, rest): (Vec<Change>, Vec<Change>) = out.drain(..).partition(into);
        let mut dropped: HashSet<Ino> = HashSet::new();
        let targets: HashSet<(Ino, std::ffi::OsString)> = renames
            .iter()
            .filter_map(|r| match r {
                Change::Rename {
                    to, newname, old, ..
                } => {
                    if old.is_dir() {
                        dropped.insert(s.table.ino_for(old.key));
                    }
                    Some((*to, newname.clone()))
                }
                _ => None,
            })
            .collect();
        for c in rest {
            if let Change::Create { dir, name, new } = &c {
                if targets.contains(&(*dir, name.clone())) || dropped.contains(dir) {
                    if new.is_dir() {
                        dropped.insert(s.table.ino_for(new.key));
                    }
                    continue;
                }
            }
            out.push(c);
        }
        for r in renames {
            let Change::Rename { from, name, to, .. } = &r else {
                continue;
            };
            let (from, name) = (*from, name.clone());
            let at = out
                .iter()
                .position(|c| {
                    matches!(c, Change::Create { new, .. }
                        if new.is_dir() && s.table.ino_for(new.key) == *to)
                })
                .map_or(out.len(), |i| i + 1);
            out.insert(at, r);
            // A new object under the name the rename leaves (`mv d e/a; mkdir d`), created
            // earlier in the list, goes after it, with what is inside it.
            let Some(p) = out[..at].iter().position(
                |c| matches!(c, Change::Create { dir, name: n, .. } if *dir == from && *n == name),
            ) else {
                continue;
            };
            let mut tree: HashSet<Ino> = HashSet::new();
            let mut moved = vec![out.remove(p)];
            if let Change::Create { new, .. } = &moved[0] {
                if new.is_dir() {
                    tree.insert(s.table.ino_for(new.key));
                }
            }
            // The rename is now at `at - 1`; what lies inside the new object sits before it.
            let mut i = p;
            while i < at - 1 {
                let inside = match &out[i] {
                    Change::Create { dir, new, .. } if tree.contains(dir) => {
                        if new.is_dir() {
                            tree.insert(s.table.ino_for(new.key));
                        }
                        true
                    }
                    c => c.names().iter().any(|(d, _)| tree.contains(d)),
                };
                if inside {
                    moved.push(out.remove(i));
                } else {
                    i += 1;
                }
            }
            let after = out
                .iter()
                .position(|c| matches!(c, Change::Rename { from: f, name: n, .. } if *f == from && *n == name))
                .map_or(out.len(), |i| i + 1);
            out.splice(after..after, moved);
        }
        out
    }
}
