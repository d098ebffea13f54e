"""The per-arm training loss figure of the report."""


def test_loss_curve_reads_every_epoch_in_step_order(tmp_path):
    from PIL import Image

    from dreamgrid.losscurve import plot_loss_curve, read_losses

    logs = []
    for epoch, steps in ((2, range(4, 7)), (1, range(1, 4))):
        path = tmp_path / f"epoch-{epoch}.loss.csv"
        rows = "".join(f"{s},{epoch},{1.0 / s!r},0.001\n" for s in steps)
        path.write_text("step,epoch,loss,lr\n" + rows)
        logs.append(path)
    rows = read_losses(logs)
    assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[3] == (4, 2, 0.25)
    out = plot_loss_curve(logs, tmp_path / "loss.png", arm="a")
    assert Image.open(out).size[0] > 400
