//! Reading the master's `/metrics` (Prometheus text format): the allocation
//! pass histogram and a few counters.

/// Sum of every sample of metric `name` (any labels), if there is one.
pub fn sample_sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = match rest.chars().next() {
            Some('{') => rest.split_once('}').map_or("", |(_, v)| v),
            Some(' ') => rest,
            _ => continue,
        };
        if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The allocation passes the master ran and the time they took.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocationStats {
    /// Histogram name without `_sum`/`_count`.
    pub metric: String,
    /// Passes run.
    pub passes: u64,
    /// Time spent in them, seconds.
    pub total_seconds: f64,
}

impl AllocationStats {
    /// Finds the master's allocation duration histogram
    /// (`agora_master_allocation*_seconds`).
    pub fn parse(text: &str) -> Option<Self> {
        let metric = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split([' ', '{']).next())
            .find(|n| n.starts_with("agora_master_allocation") && n.ends_with("_seconds_count"))?
            .strip_suffix("_count")?
            .to_owned();
        let passes = sample_sum(text, &format!("{metric}_count"))? as u64;
        let total_seconds = sample_sum(text, &format!("{metric}_sum"))?;
        Some(Self {
            metric,
            passes,
            total_seconds,
        })
    }

    /// Mean pass duration, seconds.
    pub fn mean_seconds(&self) -> f64 {
        if self.passes == 0 {
            0.0
        } else {
            self.total_seconds / self.passes as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP agora_master_allocation_pass_seconds Duration of allocation passes.
# TYPE agora_master_allocation_pass_seconds histogram
agora_master_allocation_pass_seconds_sum 1.5
agora_master_allocation_pass_seconds_count 300
agora_master_allocation_pass_seconds_bucket{le=\"0.00001\"} 0
agora_master_offers_made_total 42
agora_master_tasks{state=\"TASK_RUNNING\"} 3
agora_master_tasks{state=\"TASK_STAGING\"} 4
# EOF
";

    #[test]
    fn the_allocation_histogram_is_found_by_its_prefix() {
        let stats = AllocationStats::parse(TEXT).unwrap();
        assert_eq!(stats.metric, "agora_master_allocation_pass_seconds");
        assert_eq!(stats.passes, 300);
        assert!((stats.mean_seconds() - 0.005).abs() < 1e-12);
    }

    #[test]
    fn samples_with_labels_are_summed() {
        assert_eq!(sample_sum(TEXT, "agora_master_tasks"), Some(7.0));
    }

    #[test]
    fn a_name_that_is_only_a_prefix_does_not_match() {
        assert_eq!(sample_sum(TEXT, "agora_master_offers"), None);
        assert_eq!(sample_sum(TEXT, "agora_master_offers_made_total"), Some(42.0));
    }

    #[test]
    fn no_histogram_means_no_stats() {
        assert_eq!(AllocationStats::parse("agora_master_offers_made_total 1\n"), None);
    }
}
