//! The DAG shapes every scheduler is measured on, as lists of needs (indices of earlier stages).

/// A DAG shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Each stage needs the one before.
    Chain,
    /// One root, N-2 stages needing it, one sink needing them all.
    Wide,
    /// About sqrt(N) layers, each stage needing 1 to 3 random stages of the layer before.
    Layered,
    /// A square grid; each stage needs the one above and the one to its left.
    Lattice,
}

impl Shape {
    /// Every shape.
    pub const ALL: [Shape; 4] = [Shape::Chain, Shape::Wide, Shape::Layered, Shape::Lattice];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Chain => "chain",
            Shape::Wide => "wide",
            Shape::Layered => "layered",
            Shape::Lattice => "lattice",
        }
    }

    /// The shape named `name`.
    pub fn from_name(name: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The needs of each of `n` stages; every need has a smaller index than its stage.
    pub fn needs(self, n: usize) -> Vec<Vec<u32>> {
        match self {
            Shape::Chain => (0..n)
                .map(|i| if i == 0 { vec![] } else { vec![i as u32 - 1] })
                .collect(),
            Shape::Wide => (0..n)
                .map(|i| match i {
                    0 => vec![],
                    i if i + 1 == n && n > 2 => (1..n as u32 - 1).collect(),
                    _ => vec![0],
                })
                .collect(),
            Shape::Layered => layered(n),
            Shape::Lattice => lattice(n),
        }
    }
}

/// xorshift64*: a fixed-seed generator, so that every run builds the same graph.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

fn layered(n: usize) -> Vec<Vec<u32>> {
    let layers = (n as f64).sqrt().round().max(1.0) as usize;
    let width = n.div_ceil(layers);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..n)
        .map(|i| {
            let layer = i / width;
            if layer == 0 {
                return vec![];
            }
            let start = (layer - 1) * width;
            let k = 1 + rng.below(3);
            let mut needs: Vec<u32> = (0..k).map(|_| (start + rng.below(width)) as u32).collect();
            needs.sort_unstable();
            needs.dedup();
            needs
        })
        .collect()
}

fn lattice(n: usize) -> Vec<Vec<u32>> {
    let w = (n as f64).sqrt().ceil().max(1.0) as usize;
    (0..n)
        .map(|i| {
            let (r, c) = (i / w, i % w);
            let mut needs = Vec::with_capacity(2);
            if r > 0 {
                needs.push((i - w) as u32);
            }
            if c > 0 {
                needs.push(i as u32 - 1);
            }
            needs
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_are_dags_of_the_right_size() {
        for shape in Shape::ALL {
            for n in [1, 2, 3, 10, 1000] {
                let needs = shape.needs(n);
                assert_eq!(needs.len(), n, "{shape:?} {n}");
                for (i, ns) in needs.iter().enumerate() {
                    assert!(
                        ns.iter().all(|&d| (d as usize) < i),
                        "{shape:?} {n}: stage {i} needs a later one"
                    );
                }
            }
        }
        assert_eq!(Shape::Wide.needs(5)[4], [1, 2, 3]);
        let layered = Shape::Layered.needs(1000);
        assert!(layered[100..].iter().all(|n| (1..=3).contains(&n.len())));
    }
}
