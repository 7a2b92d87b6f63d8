from __future__ import annotations

from airflow.sdk import DAG, task


def test_dag_test_runs_a_dag_built_in_a_test(run_dag):
    with DAG("harness_smoke", schedule=None) as dag:

        @task
        def answer() -> int:
            return 42

        answer()

    dagrun = run_dag(dag)
    assert dagrun.state == "success"
    ti = dagrun.get_task_instance("answer")
    assert ti.state == "success"
