//! # tandem-graph
//!
//! Tandem's graph mode, in the style of TensorFlow 1.x: build a [`Graph`] once (placeholders,
//! variables, ops, gradients, optimizer updates), then run it many times in a [`Session`].
//!
//! - [`Graph`] implements [`tandem_ir::Emit`]: every op, composite ([`tandem_ir::Functional`])
//!   and gradient rule of the IR builds graph nodes, with shape and dtype inference at build
//!   time (errors name the node).
//! - [`Graph::gradients`] differentiates symbolically with the same rules as eager mode.
//! - [`optim`]: `GradientDescent`, `Momentum`, `Adam`, `AdamW`, `RMSprop` as graph ops that
//!   call the same fused kernels as the eager optimizers, and learning-rate schedules.
//! - [`keras`]: a Keras-style `Sequential` API (Dense, Conv2D, MaxPool2D, Flatten, Dropout;
//!   `compile`, `fit`, `evaluate`, `predict`, `summary`) built on graphs and sessions.
//! - [`Session`]: feeds checked against placeholders, plans compiled once per (fetches,
//!   feeds) and cached, optimizer passes ([`passes`]), a [`Callable`] for hot loops, failed
//!   runs that leave variables untouched.
//!
//! ## From TensorFlow 1.x
//!
//! | TensorFlow 1.x | Tandem |
//! |---|---|
//! | `tf.Graph()` | [`Graph::new`] |
//! | `tf.constant(t)` | [`Graph::constant`] |
//! | `tf.placeholder(tf.float32, [None, 784])` | `g.placeholder("x", DType::F32, &[None, Some(784)])` |
//! | `tf.Variable(init)` / `tf.get_variable` | [`Graph::variable`], [`Graph::variable_with`] |
//! | `tf.name_scope("fc1")` | `let _s = g.scope("fc1");` |
//! | `tf.control_dependencies([...])` | `let _c = g.control_dependencies(&[..])?;` |
//! | `tf.assign`, `tf.assign_add`, `tf.group`, `tf.identity` | [`Graph::assign`], [`Graph::assign_add`], [`Graph::group`], [`Graph::identity`] |
//! | `tf.gradients(ys, xs, grad_ys)` | [`Graph::gradients`] |
//! | `tf.train.AdamOptimizer(lr).minimize(loss)` | `Adam::new(lr).minimize(&loss)?` |
//! | `tf.train.exponential_decay(...)` | [`optim::schedules::exponential_decay`] |
//! | `tf.global_variables_initializer()` | [`Graph::global_variables_initializer`] |
//! | `tf.Session(graph=g)` / `sess.run(fetches, feed_dict)` | [`Session::new`] / [`Session::run`] |
//! | `sess.make_callable(fetches, feeds)` | [`Session::callable`] |
//! | `tf.train.Saver().save/restore` | [`Saver::save`] / [`Saver::restore`] |
//! | `tf.train.write_graph` / `import_graph_def` | [`Graph::save`] / [`Graph::load`] |
//!
//! ```
//! use tandem_graph::{Graph, Session};
//! use tandem_ir::EmitExt;
//! use tandem_tensor::{DType, Tensor};
//! let g = Graph::new();
//! let x = g.placeholder("x", DType::F32, &[None, Some(2)]).unwrap();
//! let w = g.variable("w", Tensor::from_vec(vec![1.0f32, 2.0], &[2, 1]).unwrap()).unwrap();
//! let y = g.emit(tandem_ir::Op::MatMul, &[&x, &w]).unwrap();
//! let s = Session::new(&g).unwrap();
//! let t = Tensor::from_vec(vec![1.0f32, 1.0, 2.0, 0.0], &[2, 2]).unwrap();
//! let out = s.run(&[&y], &[(&x, &t)]).unwrap();
//! assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![3.0, 2.0]);
//! # use tandem_ir::Emit;
//! ```

pub mod exec;
pub mod fusion;
pub mod gradients;
pub mod graph;
pub mod init;
pub mod keras;
pub mod lower;
pub mod ops;
pub mod optim;
pub mod passes;
pub mod plan;
pub mod saver;
pub mod serialize;
pub mod session;
pub mod update;

pub use exec::{is_op_marker, op_marker, Arena, Profile, RunStats, StepTime};
pub use graph::{AssignMode, Graph, Node, NodeKind, Output, VariableDef};
pub use init::Initializer;
pub use optim::{Adam, AdamW, GradientDescent, LearningRate, Momentum, Optimizer, RmsProp};
pub use passes::Pass;
pub use plan::{Plan, PlanGraph};
pub use saver::Saver;
pub use session::{Callable, Session, SessionOptions};
/// The IR traits graph building goes through (re-exported for convenience).
pub use tandem_ir::{Emit, EmitExt, Functional};
pub use update::Update;
