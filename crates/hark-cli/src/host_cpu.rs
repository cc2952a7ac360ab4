//! Where the machine's CPU time went during a measurement, from Linux's `/proc`: the share the
//! hypervisor took from this virtual machine (steal) and the share other programs used. On a
//! shared host either can slow a live round several-fold (one round here measured V2V p50
//! 3162 ms against 253-263 for the rounds before it, and `top` showed the host taking a fifth of
//! the CPU right after), so the benchmarks print them next to their figures and a disrupted
//! round is known for what it is.

use std::fs;

/// The machine's CPU time and this process's, in clock ticks, at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    total: u64,
    idle: u64,
    steal: u64,
    own: u64,
}

/// How a span of time was spent, as shares of all the machine's CPU time in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuShares {
    /// Taken by the hypervisor for other guests.
    pub steal: f64,
    /// Used outside this process: other programs, the kernel's interrupt handling.
    pub others: f64,
}

impl CpuTimes {
    /// Now; `None` where `/proc` cannot tell (not Linux, or hidden).
    pub fn now() -> Option<Self> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let own = fs::read_to_string("/proc/self/stat").ok()?;
        Self::parse(&stat, &own)
    }

    /// From the texts of `/proc/stat` and `/proc/self/stat`.
    fn parse(stat: &str, own: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        // user nice system idle iowait irq softirq steal (guest time is counted in user).
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        if f.len() < 8 {
            return None;
        }
        // The command name, in parentheses, may hold spaces: the fields start after its ')'.
        let after_name = &own[own.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are the stat file's 14th and 15th fields: 12th and 13th after the name.
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(CpuTimes {
            total: f.iter().sum(),
            idle: f[3] + f[4],
            steal: f[7],
            own: utime + stime,
        })
    }

    /// How the time since `before` (a [`CpuTimes::now`] taken then) was spent; `None` where
    /// either reading failed.
    pub fn shares_since(before: Option<CpuTimes>) -> Option<CpuShares> {
        before
            .zip(Self::now())
            .and_then(|(a, b)| a.shares_until(&b))
    }

    /// How the time from `self` to `later` was spent; `None` if no time passed.
    pub fn shares_until(&self, later: &CpuTimes) -> Option<CpuShares> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)? as f64;
        let idle = later.idle.saturating_sub(self.idle) as f64;
        let steal = later.steal.saturating_sub(self.steal) as f64;
        let own = later.own.saturating_sub(self.own) as f64;
        Some(CpuShares {
            steal: steal / total,
            others: ((total - idle - steal - own) / total).clamp(0.0, 1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  4307238 511 343439 3939729 31983 0 2709 132661 0 0\n\
                        cpu0 2086818 255 143482 2073912 6815 0 306 66558 0 0\n";

    fn own(utime: u64, stime: u64) -> String {
        format!("24169 (a (strange) name) R 24165 24165 17718 0 -1 4194304 123 0 0 0 {utime} {stime} 0 0 20 0 1")
    }

    #[test]
    fn reads_the_machine_and_this_process() {
        let t = CpuTimes::parse(STAT, &own(40, 2)).unwrap();
        assert_eq!(
            t,
            CpuTimes {
                total: 4307238 + 511 + 343439 + 3939729 + 31983 + 2709 + 132661,
                idle: 3939729 + 31983,
                steal: 132661,
                own: 42,
            }
        );
        assert_eq!(CpuTimes::parse("intr 1 2 3\n", &own(1, 1)), None);
        assert_eq!(CpuTimes::parse(STAT, "24169 (cat) R"), None);
    }

    #[test]
    fn shares_of_a_span() {
        let a = CpuTimes {
            total: 1000,
            idle: 500,
            steal: 10,
            own: 100,
        };
        // 200 ticks: 50 idle, 40 stolen, 80 ours, so 30 outside.
        let b = CpuTimes {
            total: 1200,
            idle: 550,
            steal: 50,
            own: 180,
        };
        let s = a.shares_until(&b).unwrap();
        assert!((s.steal - 0.2).abs() < 1e-12 && (s.others - 0.15).abs() < 1e-12);
        assert_eq!(a.shares_until(&a), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_this_machine() {
        let t = CpuTimes::now().expect("/proc/stat and /proc/self/stat");
        assert!(t.total > t.idle && t.total >= t.steal);
    }
}
