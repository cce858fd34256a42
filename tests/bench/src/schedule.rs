//! The order in which subjects are measured.
//!
//! Every round measures each subject once (A B C), so slow drift of a shared machine (other
//! builds starting, page cache filling) hits all subjects alike. The first slot rotates from
//! round to round (A B C, B C A, C A B, A B C ...): no subject is always measured right after
//! the same neighbour or always first after a warm-up.

/// Subject indices for round `round` (0-based) of `n` subjects.
pub fn round_order(n: usize, round: usize) -> Vec<usize> {
    if n == 0 {
        return Vec::new();
    }
    (0..n).map(|i| (i + round) % n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_covers_everyone_each_round() {
        assert_eq!(round_order(3, 0), [0, 1, 2]);
        assert_eq!(round_order(3, 1), [1, 2, 0]);
        assert_eq!(round_order(3, 2), [2, 0, 1]);
        assert_eq!(round_order(3, 3), [0, 1, 2]);
        assert_eq!(round_order(2, 1), [1, 0]);
        assert_eq!(round_order(1, 5), [0]);
        assert!(round_order(0, 2).is_empty());
        for r in 0..7 {
            let mut o = round_order(4, r);
            o.sort();
            assert_eq!(o, [0, 1, 2, 3]);
        }
    }

    #[test]
    fn each_subject_leads_equally_often() {
        let mut first = [0usize; 3];
        for r in 0..9 {
            first[round_order(3, r)[0]] += 1;
        }
        assert_eq!(first, [3, 3, 3]);
    }
}
