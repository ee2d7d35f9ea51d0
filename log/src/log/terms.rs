//! The term of every stored offset, as a run-length list: `(first offset, term)` for each
//! point where the term changes. Raft asks the term of an offset on every AppendEntries, so
//! this answers from memory; it is rebuilt from the batch headers at open. Pure: no I/O.

/// Terms are non-decreasing by offset, so a run starts only where the term grows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TermRuns {
    /// `(first_offset, term)`, both strictly increasing.
    runs: Vec<(u64, u64)>,
}

impl TermRuns {
    /// Records that the batch starting at `base_offset` has `term`. Batches come in offset
    /// order, with terms that never go back (the writer refuses those first).
    pub(crate) fn push(&mut self, base_offset: u64, term: u64) {
        match self.runs.last() {
            Some(&(first, last_term)) => {
                debug_assert!(term >= last_term, "terms go back: {term} after {last_term}");
                debug_assert!(base_offset > first || term == last_term, "offsets go back");
                if term > last_term {
                    self.runs.push((base_offset, term));
                }
            }
            None => self.runs.push((base_offset, term)),
        }
    }

    /// The term of `offset`: that of the last run starting at or before it. The caller
    /// checks that `offset` is stored; an offset before the first run has none.
    pub(crate) fn term_at(&self, offset: u64) -> Option<u64> {
        let after = self.runs.partition_point(|&(first, _)| first <= offset);
        after.checked_sub(1).map(|i| self.runs[i].1)
    }

    /// Forgets the terms of `cut` and every offset after it (truncation).
    pub(crate) fn truncate_from(&mut self, cut: u64) {
        let keep = self.runs.partition_point(|&(first, _)| first < cut);
        self.runs.truncate(keep);
    }

    /// Forgets the runs that end before `log_start` (retention); the run holding
    /// `log_start` stays, so every stored offset keeps its term.
    pub(crate) fn purge_before(&mut self, log_start: u64) {
        let holding = self.runs.partition_point(|&(first, _)| first <= log_start).saturating_sub(1);
        self.runs.drain(..holding);
    }

    /// Forgets everything (a reset to a snapshot).
    pub(crate) fn clear(&mut self) {
        self.runs.clear();
    }

    /// The newest term recorded.
    pub(crate) fn last_term(&self) -> Option<u64> {
        self.runs.last().map(|&(_, term)| term)
    }
}

#[cfg(test)]
mod tests {
    use super::TermRuns;

    fn runs(batches: &[(u64, u64)]) -> TermRuns {
        let mut runs = TermRuns::default();
        for &(base, term) in batches {
            runs.push(base, term);
        }
        runs
    }

    #[test]
    fn a_term_holds_from_its_first_batch_to_the_next_term() {
        let runs = runs(&[(0, 1), (3, 1), (5, 2), (9, 2), (10, 4)]);
        assert_eq!(runs.runs, vec![(0, 1), (5, 2), (10, 4)]);
        let got: Vec<_> = (0..12).map(|o| runs.term_at(o)).collect();
        let want = [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 4, 4].map(Some);
        assert_eq!(got, want);
        assert_eq!(TermRuns::default().term_at(0), None);
        assert_eq!(self::runs(&[(5, 3)]).term_at(4), None, "no term before the first run");
    }

    #[test]
    fn truncation_forgets_the_runs_it_cuts() {
        let mut r = runs(&[(0, 1), (5, 2), (10, 4)]);
        r.truncate_from(10);
        assert_eq!((r.term_at(12), r.last_term()), (Some(2), Some(2)));
        r.truncate_from(6);
        assert_eq!(r.runs, vec![(0, 1), (5, 2)], "a cut inside a run keeps its start");
        r.truncate_from(5);
        assert_eq!(r.runs, vec![(0, 1)]);
        r.push(5, 3);
        assert_eq!(r.term_at(5), Some(3));
        r.truncate_from(0);
        assert_eq!(r.last_term(), None);
    }

    #[test]
    fn retention_keeps_the_run_holding_the_new_start() {
        let mut r = runs(&[(0, 1), (5, 2), (10, 4)]);
        r.purge_before(7);
        assert_eq!(r.runs, vec![(5, 2), (10, 4)]);
        assert_eq!(r.term_at(7), Some(2));
        r.purge_before(10);
        assert_eq!(r.runs, vec![(10, 4)]);
        r.purge_before(50);
        assert_eq!(r.runs, vec![(10, 4)]);
        r.clear();
        assert_eq!(r.term_at(50), None);
    }
}
