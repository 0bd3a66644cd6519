//! The `ComputeItems` operator: computes tasks one per activation.
//!
//! timely hands an operator every queued batch at once, and a plain `map` would compute them all before
//! any result leaves the operator, so the driver could journal nothing (and show no progress) until a
//! worker's whole share was done. This operator queues its input, computes one task, emits the record
//! and asks to be scheduled again while tasks remain: results stream to the driver item by item, and a
//! killed run loses at most the items in flight.

use std::collections::VecDeque;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use super::task::{self, Done, Task};
use crate::pipeline::Pipeline;
use crate::store::Workspace;

/// Extension trait: compute a stream of tasks on the workers the driver chose.
pub trait ComputeItems<'scope> {
    /// Computes each task on its `worker`; yields one record per task.
    fn compute_items(self, pipeline: Arc<Pipeline>, ws: Workspace) -> StreamVec<'scope, u64, Done>;
}

impl<'scope> ComputeItems<'scope> for StreamVec<'scope, u64, Task> {
    fn compute_items(self, pipeline: Arc<Pipeline>, ws: Workspace) -> StreamVec<'scope, u64, Done> {
        let scope = self.scope();
        self.unary::<CapacityContainerBuilder<Vec<Done>>, _, _, _>(Exchange::new(|t: &Task| t.worker as u64), "ComputeItems", move |_cap, info| {
            let activator = scope.activator_for(info.address.clone());
            let mut queue: VecDeque<(Capability<u64>, Task)> = VecDeque::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    if let Some(c) = cap.retain_least(0) {
                        queue.extend(data.drain(..).map(|t| (c.clone(), t)));
                    }
                });
                if let Some((cap, t)) = queue.pop_front() {
                    let done = task::compute(&pipeline, &ws, t);
                    output.session(&cap).give(done);
                }
                if !queue.is_empty() {
                    activator.activate();
                }
            }
        })
    }
}
