from wcse_jax import progress


def test_bar_counts_units_with_a_throughput(capsys):
  bar = progress.bar(total=100, desc="sampling", unit="tok")
  bar.update(60)
  bar.update(40)
  bar.close()
  shown = capsys.readouterr().err
  assert "sampling" in shown and "100/100" in shown and "tok/s" in shown


def test_only_process_0_shows_it(monkeypatch, capsys):
  monkeypatch.setattr(progress.jax, "process_index", lambda: 1)
  bar = progress.bar(total=10, desc="sampling")
  bar.update(10)
  bar.close()
  assert bar.disable and capsys.readouterr().err == ""
  assert not progress.bar(total=10, desc="every process", chief_only=False).disable
