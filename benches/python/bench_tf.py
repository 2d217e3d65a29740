"""TensorFlow peer benchmarks for the workloads of `benches/modes.rs` (W1, W3, W4, W5, W6).

Optional, not run by CI. Usage (2 threads, like the Rust benchmarks):

    python benches/python/bench_tf.py            # both styles, each in its own process
    python benches/python/bench_tf.py --style tf2  # TF2 tf.function only
    python benches/python/bench_tf.py --style tf1  # TF1 tf.compat.v1.Session only

TF1 graph mode needs eager execution disabled for the whole process, so each style runs in a
separate process. Writes `benches/python/results/tf_tf2.json` and `tf_tf1.json`.
"""

import argparse
import subprocess
import sys

from common import CHAIN, measure, result, write

THREADS = 2


def setup_tf():
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    return tf


def mlp_layers(tf):
    return [
        tf.keras.layers.Dense(128, activation="relu"),
        tf.keras.layers.Dense(10),
    ]


def lenet_layers(tf):
    L = tf.keras.layers
    return [
        L.Conv2D(6, 5, padding="same", activation="relu"),
        L.MaxPool2D(2),
        L.Conv2D(16, 5, activation="relu"),
        L.MaxPool2D(2),
        L.Flatten(),
        L.Dense(120, activation="relu"),
        L.Dense(84, activation="relu"),
        L.Dense(10),
    ]


TRAIN_CASES = [
    ("W1_mlp_step", "b64", mlp_layers, (64, 784)),
    ("W1_mlp_step", "b1024", mlp_layers, (1024, 784)),
    # NHWC: TensorFlow's CPU convolutions want channels last.
    ("W3_lenet_step", "b64", lenet_layers, (64, 28, 28, 1)),
]


def run_tf2():
    tf = setup_tf()
    results = []
    for group, case, layers, shape in TRAIN_CASES:
        model = tf.keras.Sequential(layers(tf))
        opt = tf.keras.optimizers.Adam(1e-3)
        x = tf.random.normal(shape, seed=0)
        y = tf.random.uniform((shape[0],), 0, 10, dtype=tf.int32, seed=0)
        loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        @tf.function
        def step():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        results.append(result(group, case, "tf_function", measure(lambda: step().numpy())))

    for case, n in [("n16", 16), ("n1M", 1_000_000)]:
        x = tf.random.normal((n,), seed=0)

        @tf.function
        def chain():
            y = x
            for _ in range(CHAIN):
                y = y + x
            return y

        results.append(result("W4_add_chain", case, "tf_function", measure(lambda: chain().numpy())))

    for n in [512, 1024, 2048]:
        a, b = tf.random.normal((n, n), seed=0), tf.random.normal((n, n), seed=1)
        mm = tf.function(lambda: tf.matmul(a, b))
        results.append(result("W5_matmul", str(n), "tf_function", measure(lambda: mm().numpy())))

    model = tf.keras.Sequential(mlp_layers(tf))
    x = tf.random.normal((1, 784), seed=0)
    infer = tf.function(lambda: model(x, training=False))
    results.append(result("W6_mlp_infer", "b1", "tf_function", measure(lambda: infer().numpy())))
    write("tf_tf2", f"tensorflow {tf.__version__} (tf.function)", results)


def run_tf1():
    tf = setup_tf()
    v1 = tf.compat.v1
    v1.disable_eager_execution()
    results = []
    config = v1.ConfigProto(
        intra_op_parallelism_threads=THREADS, inter_op_parallelism_threads=THREADS
    )

    def timed(group, case, build):
        graph = tf.Graph()
        with graph.as_default():
            fetch = build()
            init = v1.global_variables_initializer()
        with v1.Session(graph=graph, config=config) as sess:
            sess.run(init)
            results.append(result(group, case, "tf1_session", measure(lambda: sess.run(fetch))))

    for group, case, layers, shape in TRAIN_CASES:

        def build(layers=layers, shape=shape):
            # Variables, so that the data is made once and not on every run.
            x = tf.Variable(v1.random_normal(shape, seed=0), trainable=False)
            y = tf.Variable(
                v1.random_uniform((shape[0],), 0, 10, dtype=tf.int32, seed=0), trainable=False
            )
            h = x
            for layer in layers(tf):
                h = layer(h)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=h)
            )
            return v1.train.AdamOptimizer(1e-3).minimize(loss)

        timed(group, case, build)

    for case, n in [("n16", 16), ("n1M", 1_000_000)]:

        def build(n=n):
            x = tf.Variable(v1.random_normal((n,), seed=0))
            y = x
            for _ in range(CHAIN):
                y = y + x
            return y.op

        timed("W4_add_chain", case, build)

    for n in [512, 1024, 2048]:

        def build(n=n):
            a = tf.Variable(v1.random_normal((n, n), seed=0))
            b = tf.Variable(v1.random_normal((n, n), seed=1))
            return tf.matmul(a, b).op

        timed("W5_matmul", str(n), build)

    def build_infer():
        x = tf.Variable(v1.random_normal((1, 784), seed=0))
        h = x
        for layer in mlp_layers(tf):
            h = layer(h)
        return h

    timed("W6_mlp_infer", "b1", build_infer)
    write("tf_tf1", f"tensorflow {tf.__version__} (tf.compat.v1.Session)", results)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--style", choices=["tf1", "tf2", "both"], default="both")
    args = p.parse_args()
    if args.style == "tf2":
        run_tf2()
    elif args.style == "tf1":
        run_tf1()
    else:
        for style in ["tf2", "tf1"]:
            subprocess.run([sys.executable, __file__, "--style", style], check=True)


if __name__ == "__main__":
    main()
