"""The data layer: tasks (synthetic and real), prompts, grading, the code sandbox, record shards.

Modules (import the one you need; none of them imports tensorflow except seqio_tasks):
  tasks        get_task(name, **knobs), known_tasks()
  example      Example, Step, StepReport, Task
  arith, words, synthetic   the generated tasks and their step checker
  real, sources             GSM8K / MATH / MATH500 / HumanEval and the file/TFDS/HF readers
  prompts      build_prompt, stop_strings, exemplars
  answers      answer extraction per format
  grading      grade, grade_many (math-verify in worker processes with hard deadlines)
  sandbox      run_program, run_programs (sandbox_child.py is its child side)
  records      ShardWriter, read_records, done_keys
  pipeline     plain-Python (prompt, target) iterators;  seqio_tasks  seqio registrations
"""
