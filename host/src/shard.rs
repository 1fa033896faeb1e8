//! Splitting the inputs across machines: shard K of N takes the inputs whose index in the
//! sorted input list is K modulo N, so N machines running the same config each do a disjoint
//! share and together do all of it.
//!
//! `--shard auto` reads K and N from the scheduler:
//! - a Kubernetes Indexed Job: K = `JOB_COMPLETION_INDEX` (set by Kubernetes); N must be passed
//!   in by the Job spec as `PIX2PIX_SHARD_COUNT` or `JOB_COMPLETIONS` (Kubernetes does not export
//!   `.spec.completions`; set it in `env:` to the same number);
//! - a Slurm job array: K = `SLURM_ARRAY_TASK_ID` − `SLURM_ARRAY_TASK_MIN` (0 if unset),
//!   N = `SLURM_ARRAY_TASK_COUNT`.

use std::str::FromStr;

use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// What `--shard` was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardSpec {
    Fixed(Shard),
    Auto,
}

impl FromStr for ShardSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(ShardSpec::Auto);
        }
        let (k, n) =
            s.split_once('/').ok_or_else(|| format!("{s:?}: expected K/N (e.g. 0/4) or auto"))?;
        let k: usize = k.trim().parse().map_err(|_| format!("{s:?}: K is not a number"))?;
        let n: usize = n.trim().parse().map_err(|_| format!("{s:?}: N is not a number"))?;
        Shard::new(k, n).map(ShardSpec::Fixed).map_err(|e| e.to_string())
    }
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            bail!("shard count must be at least 1");
        }
        if index >= count {
            bail!("shard index {index} is not below the shard count {count} (indices start at 0)");
        }
        Ok(Self { index, count })
    }

    pub fn takes(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

impl ShardSpec {
    /// The shard to run; `env` looks up environment variables (a parameter, for tests).
    pub fn resolve(self, env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        match self {
            ShardSpec::Fixed(s) => Ok(s),
            ShardSpec::Auto => auto(env),
        }
    }
}

fn number(env: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Option<usize>> {
    match env(name) {
        None => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .with_context(|| format!("{name}={v:?} is not a non-negative integer")),
    }
}

fn auto(env: impl Fn(&str) -> Option<String>) -> Result<Shard> {
    if let Some(k) = number(&env, "JOB_COMPLETION_INDEX")? {
        let n = match number(&env, "PIX2PIX_SHARD_COUNT")? {
            Some(n) => n,
            None => number(&env, "JOB_COMPLETIONS")?.context(
                "--shard auto: JOB_COMPLETION_INDEX is set (Kubernetes Indexed Job) but the shard count is not: \
                 set PIX2PIX_SHARD_COUNT (or JOB_COMPLETIONS) to the Job's completions in its env",
            )?,
        };
        return Shard::new(k, n).context("--shard auto (Kubernetes)");
    }
    if let Some(id) = number(&env, "SLURM_ARRAY_TASK_ID")? {
        let min = number(&env, "SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let n = number(&env, "SLURM_ARRAY_TASK_COUNT")?.context(
            "--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not",
        )?;
        let k = id
            .checked_sub(min)
            .context("--shard auto: SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
        return Shard::new(k, n).context("--shard auto (Slurm array)");
    }
    bail!(
        "--shard auto: no scheduler found: set JOB_COMPLETION_INDEX and PIX2PIX_SHARD_COUNT (Kubernetes Indexed Job) \
         or SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT (Slurm array), or pass --shard K/N"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn parses_fixed_shards() {
        assert_eq!("1/4".parse::<ShardSpec>(), Ok(ShardSpec::Fixed(Shard { index: 1, count: 4 })));
        assert_eq!("auto".parse::<ShardSpec>(), Ok(ShardSpec::Auto));
        for bad in ["4/4", "1/0", "x/2", "3", "-1/2"] {
            assert!(bad.parse::<ShardSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_reads_kubernetes_and_slurm() {
        let k8s = [("JOB_COMPLETION_INDEX", "2"), ("PIX2PIX_SHARD_COUNT", "3")];
        assert_eq!(ShardSpec::Auto.resolve(env(&k8s)).unwrap(), Shard { index: 2, count: 3 });
        let k8s = [("JOB_COMPLETION_INDEX", "0"), ("JOB_COMPLETIONS", "5")];
        assert_eq!(ShardSpec::Auto.resolve(env(&k8s)).unwrap(), Shard { index: 0, count: 5 });
        assert!(ShardSpec::Auto.resolve(env(&[("JOB_COMPLETION_INDEX", "0")])).is_err());
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "5"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(ShardSpec::Auto.resolve(env(&slurm)).unwrap(), Shard { index: 2, count: 4 });
        assert!(ShardSpec::Auto.resolve(env(&[])).is_err());
    }

    #[test]
    fn shards_partition_the_indices() {
        let n = 3;
        let mut seen = [0; 10];
        for k in 0..n {
            let s = Shard::new(k, n).unwrap();
            (0..10).filter(|&i| s.takes(i)).for_each(|i| seen[i] += 1);
        }
        assert!(seen.iter().all(|&c| c == 1));
    }
}
