"""The OpenMMLab stack is installed and its compiled CPU ops compute the right numbers."""
import pytest
import torch

pytestmark = pytest.mark.mm


def test_imports_and_versions():
    import mmcv
    import mmdet
    import mmengine
    import mmseg
    assert mmcv.__version__ == '2.1.0'
    assert mmdet.__version__ == '3.3.0'
    assert mmseg.__version__ == '1.2.2'
    assert mmengine.__version__ == '0.10.7'


def test_nms_suppresses_overlaps():
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.], [0., 0., 10., 9.]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    # box 3 (0.95) wins; box 0 overlaps it with IoU 0.9, box 1 overlaps box 3 with IoU 72/118 = 0.61
    assert keep.tolist() == [3, 2]
    assert torch.allclose(dets[:, 4], torch.tensor([0.95, 0.7]))
    _, keep = nms(boxes, scores, iou_threshold=0.95)
    assert sorted(keep.tolist()) == [0, 1, 2, 3]


def test_roi_align_exact_on_a_ramp():
    from mmcv.ops import roi_align
    # feature value = x coordinate of the pixel centre grid (pixel j has value j); with aligned=True a box
    # [x0, x1] sampled once per bin at bin centres gives exactly the bin-centre x - 0.5
    feat = torch.arange(8.).repeat(8, 1)[None, None]                     # (1, 1, 8, 8)
    rois = torch.tensor([[0., 2., 2., 6., 6.]])                          # (batch index, x1, y1, x2, y2)
    out = roi_align(feat, rois, (2, 2), 1.0, 1, 'avg', True)  # autograd Function: positional only
    assert out.shape == (1, 1, 2, 2)
    assert torch.allclose(out[0, 0], torch.tensor([[2.5, 4.5], [2.5, 4.5]]))


def test_roi_align_matches_torchvision():
    from mmcv.ops import roi_align
    from torchvision.ops import roi_align as tv_roi_align
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 13, 17, generator=g)
    rois = torch.tensor([[0., 1.3, 2.2, 9.7, 11.1], [1., 0., 0., 16., 12.], [1., 5.5, 3.25, 6.5, 4.0]])
    for aligned in (True, False):
        ours = roi_align(feat, rois, (7, 7), 0.5, 2, 'avg', aligned)
        ref = tv_roi_align(feat, rois, (7, 7), 0.5, 2, aligned)
        assert torch.allclose(ours, ref, atol=1e-5)
