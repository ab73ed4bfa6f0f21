//! dagx: typed tasks with 0 to 8 inputs; the `wide` sink, which needs N-2 stages, becomes a tree
//! of 8-input joins (dagx wires dependencies as tuples, at most 8 wide), which adds about N/7
//! stages to its run.

use dagx::{DagRunner, Task, TaskHandle, task};

use super::{Leftover, Prepared};

struct Src;

#[task]
impl Src {
    async fn run() -> u8 {
        0
    }
}

macro_rules! join_task {
    ($name:ident, $($arg:ident),+) => {
        struct $name;
        #[task]
        impl $name {
            #[allow(unused_variables, clippy::too_many_arguments)]
            async fn run($($arg: &u8),+) -> u8 {
                0
            }
        }
    };
}

join_task!(J1, a);
join_task!(J2, a, b);
join_task!(J3, a, b, c);
join_task!(J4, a, b, c, d);
join_task!(J5, a, b, c, d, e);
join_task!(J6, a, b, c, d, e, f);
join_task!(J7, a, b, c, d, e, f, g);
join_task!(J8, a, b, c, d, e, f, g, h);

fn join(dag: &DagRunner, h: &[&TaskHandle<u8>]) -> TaskHandle<u8> {
    match h {
        [] => dag.add_task(Src).into(),
        [a] => dag.add_task(J1).depends_on((*a,)),
        [a, b] => dag.add_task(J2).depends_on((*a, *b)),
        [a, b, c] => dag.add_task(J3).depends_on((*a, *b, *c)),
        [a, b, c, d] => dag.add_task(J4).depends_on((*a, *b, *c, *d)),
        [a, b, c, d, e] => dag.add_task(J5).depends_on((*a, *b, *c, *d, *e)),
        [a, b, c, d, e, f] => dag.add_task(J6).depends_on((*a, *b, *c, *d, *e, *f)),
        [a, b, c, d, e, f, g] => dag.add_task(J7).depends_on((*a, *b, *c, *d, *e, *f, *g)),
        more => {
            // More than 8 inputs: join them in groups of 8 first.
            let mut level: Vec<TaskHandle<u8>> = more.iter().map(|h| **h).collect();
            while level.len() > 8 {
                level = level
                    .chunks(8)
                    .map(|c| {
                        let refs: Vec<&TaskHandle<u8>> = c.iter().collect();
                        match refs.as_slice() {
                            [a, b, c, d, e, f, g, h] => dag
                                .add_task(J8)
                                .depends_on((*a, *b, *c, *d, *e, *f, *g, *h)),
                            short => join(dag, short),
                        }
                    })
                    .collect();
            }
            let refs: Vec<&TaskHandle<u8>> = level.iter().collect();
            match refs.as_slice() {
                [a, b, c, d, e, f, g, h] => dag
                    .add_task(J8)
                    .depends_on((*a, *b, *c, *d, *e, *f, *g, *h)),
                short => join(dag, short),
            }
        }
    }
}

pub(super) fn prepare(needs: &[Vec<u32>]) -> Prepared {
    let dag = DagRunner::new();
    let mut handles: Vec<TaskHandle<u8>> = Vec::with_capacity(needs.len());
    for ns in needs {
        let inputs: Vec<&TaskHandle<u8>> = ns.iter().map(|&d| &handles[d as usize]).collect();
        let h = join(&dag, &inputs);
        handles.push(h);
    }
    Box::new(move || {
        Box::pin(async move {
            dag.run(|fut| {
                tokio::spawn(fut);
            })
            .await
            .unwrap_or_else(|e| panic!("dagx: {e}"));
            Box::new((dag, handles)) as Leftover
        })
    })
}
