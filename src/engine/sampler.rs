//! Next-token selection: repeat penalty, then top-k, temperature, top-p and min-p, in the
//! order llama.cpp (and so Ollama) applies them. Temperature 0 is greedy.

use rand::distr::{weighted::WeightedIndex, Distribution};
use rand::rngs::StdRng;
use rand::SeedableRng;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// 0 = disabled.
    pub top_k: usize,
    /// 1.0 = disabled.
    pub top_p: f32,
    /// 0.0 = disabled.
    pub min_p: f32,
    /// 1.0 = disabled.
    pub repeat_penalty: f32,
    /// How many of the most recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// `None`: a random seed.
    pub seed: Option<u64>,
    /// Report each chosen token's log-probability and this many most likely alternatives
    /// (`None`: report nothing). Not a sampling setting, but it is decided where one is.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    /// Ollama's defaults (`api/types.go` `DefaultOptions`, v0.33).
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = match params.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_os_rng(),
        };
        Self { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token. `logits` may be modified; entries at `-inf` are never chosen.
    /// `history` is the sequence so far (prompt and generated), for the repeat penalty.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let p = &self.params;
        if p.repeat_penalty != 1.0 && p.repeat_last_n > 0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = history[start..].to_vec();
            seen.sort_unstable();
            seen.dedup();
            for &t in &seen {
                if let Some(l) = logits.get_mut(t as usize) {
                    // Divide positive logits and multiply negative ones: both lower the odds.
                    *l = if *l > 0.0 {
                        *l / p.repeat_penalty
                    } else {
                        *l * p.repeat_penalty
                    };
                }
            }
        }
        if p.temperature <= 0.0 {
            return argmax(logits);
        }

        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| (i as u32, *l))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.truncate(p.top_k);
        }
        // Softmax with temperature over the survivors (sorted, so cand[0] is the max).
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand
            .iter()
            .map(|(_, l)| ((l - max) / p.temperature).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= sum);

        let mut keep = probs.len();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            for (i, pr) in probs.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            let floor = probs[0] * p.min_p;
            keep = keep.min(probs.iter().take_while(|pr| **pr >= floor).count().max(1));
        }
        probs.truncate(keep);
        match WeightedIndex::new(&probs) {
            Ok(dist) => cand[dist.sample(&mut self.rng)].0,
            Err(_) => cand[0].0,
        }
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, l) in logits.iter().enumerate() {
        if *l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: Some(7),
            logprobs: None,
        }
    }

    #[test]
    fn temperature_zero_is_argmax() {
        let mut s = Sampler::new(params(0.0));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0], &[]), 1);
    }

    #[test]
    fn repeat_penalty_can_flip_the_greedy_choice() {
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 1.5,
            ..params(0.0)
        });
        // Token 1 was just produced; 3.0 / 1.5 = 2.0 < 2.9.
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0], &[1]), 2);
        // Negative logits are pushed further down, not up.
        let mut l = [-1.0, -2.0];
        s.sample(&mut l, &[0]);
        assert_eq!(l[0], -1.5);
        // Outside the window the penalty does not apply.
        let mut s = Sampler::new(SamplingParams {
            repeat_penalty: 1.5,
            repeat_last_n: 1,
            ..params(0.0)
        });
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9, -1.0], &[1, 0]), 1);
    }

    #[test]
    fn same_seed_same_choices() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..params(1.0)
            });
            (0..40)
                .map(|_| s.sample(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn top_k_one_is_greedy_even_when_hot() {
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(5.0)
        });
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [1.0, 1.2, 0.9], &[]), 1);
        }
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // Probabilities at T=1: ~[0.665, 0.245, 0.090]
        let logits = [2.0f32, 1.0, 0.0];
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.5,
            ..params(1.0)
        });
        for _ in 0..100 {
            assert_eq!(s.sample(&mut logits.clone(), &[]), 0);
        }
        let mut s = Sampler::new(SamplingParams {
            min_p: 0.2,
            ..params(1.0)
        });
        let picks: Vec<u32> = (0..300)
            .map(|_| s.sample(&mut logits.clone(), &[]))
            .collect();
        assert!(!picks.contains(&2), "0.090 < 0.2 * 0.665 is cut");
        assert!(picks.contains(&1), "0.245 >= 0.133 survives");
    }

    #[test]
    fn masked_tokens_are_never_sampled() {
        let mut s = Sampler::new(params(1.5));
        for _ in 0..200 {
            let mut l = [5.0, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
            let t = s.sample(&mut l, &[]);
            assert!(t == 0 || t == 2);
        }
    }
}
