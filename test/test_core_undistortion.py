"""Lens distortion: raw images undistorted onto their K before the network, on both engine paths."""

import cv2
import numpy as np
import pytest
import torch

from da3_ros.core.engine import DA3Engine
from da3_ros.core.frames import CameraIntrinsics, Frame
from da3_ros.core.undistortion import Undistorter, supported, undistortion_maps
from da3_ros.model import DA3Output, get_preset

W, H = 160, 120
K = np.array([[120.0, 0, 79.0], [0, 118.0, 61.5], [0, 0, 1]])
BARREL = CameraIntrinsics(K, W, H, D=np.array([-0.25, 0.08, 0.001, -0.002, 0.0]),
                          distortion_model="plumb_bob")
PINCUSHION = CameraIntrinsics(K, W, H, D=np.array([0.3, 0.0, 0.0, 0.0, 0.0]), distortion_model="plumb_bob")
RATIONAL = CameraIntrinsics(K, W, H, D=np.array([-0.2, 0.05, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0]),
                            distortion_model="rational_polynomial")
FISHEYE = CameraIntrinsics(K, W, H, D=np.array([0.05, -0.01, 0.0, 0.0]), distortion_model="equidistant")


def _raw_with_dots(intr, pinhole_px, sigma=1.2):
    """A raw image of ``intr`` with Gaussian dots (sub-pixel centres) where the pinhole pixels
    ``pinhole_px`` land."""
    rays = np.column_stack([pinhole_px, np.ones(len(pinhole_px))]) @ np.linalg.inv(intr.K).T
    if intr.distortion_model == "equidistant":
        raw = cv2.fisheye.distortPoints(rays[None, :, :2].astype(np.float64), intr.K, intr.D[:4])[0]
    else:
        raw = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), intr.K, intr.D)[0][:, 0]
    v, u = np.mgrid[0:H, 0:W]
    img = sum(np.exp(-((u - x) ** 2 + (v - y) ** 2) / (2 * sigma ** 2)) for x, y in raw)
    return np.repeat((255 * img).astype(np.uint8)[..., None], 3, axis=2), raw


def _centroids(img):
    """Intensity-weighted centre of each dot."""
    grey = img[..., 0].astype(np.float64)
    n, labels = cv2.connectedComponents((grey > 40).astype(np.uint8))
    v, u = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return np.array([[np.sum(u * grey * (labels == i)), np.sum(v * grey * (labels == i))]
                     / np.sum(grey * (labels == i)) for i in range(1, n)])


@pytest.mark.parametrize("intr", [BARREL, PINCUSHION, RATIONAL, FISHEYE], ids=lambda i: i.distortion_model)
def test_undistorted_image_puts_each_point_where_the_pinhole_k_projects_it(intr):
    want = np.array([[20.0, 15.0], [140.0, 20.0], [80.0, 60.0], [25.0, 100.0], [135.0, 105.0]])
    raw, raw_px = _raw_with_dots(intr, want)
    assert np.abs(raw_px - want).max() > 3  # the distortion is real
    out, _ = Undistorter().undistort(Frame(raw, 1, intrinsics=intr))
    got = _centroids(out.image)
    assert len(got) == len(want)
    dist = np.linalg.norm(got[:, None] - want[None], axis=-1).min(axis=1)
    assert dist.max() < 0.15  # bilinear resampling of the dots


def test_pixels_without_a_source_are_masked_and_plain_pinhole_frames_pass_through():
    assert undistortion_maps(BARREL)[2] is None  # barrel: the undistorted view lies inside the raw one
    inside = undistortion_maps(PINCUSHION)[2]
    assert inside is not None and not inside[0, 0] and inside[H // 2, W // 2]
    plain = Frame(np.zeros((H, W, 3), np.uint8), 1, intrinsics=CameraIntrinsics(K, W, H, D=np.zeros(5)))
    assert Undistorter().undistort(plain) == (plain, None)
    assert supported(BARREL) and supported(FISHEYE) and supported(plain.intrinsics)
    assert not supported(CameraIntrinsics(K, W, H, D=np.array([0.1, 0, 0]), distortion_model="plumb_bob"))
    assert not supported(CameraIntrinsics(K, W, H, D=np.array([0.1, 0, 0, 0, 0]), distortion_model="unknown"))


class _EchoNet(torch.nn.Module):
    """Depth 1 everywhere, identity cameras; records the images it was given."""

    preset = get_preset("da3-tiny")
    is_metric = False

    def __init__(self):
        super().__init__()
        self.images = []

    def forward(self, images, extrinsics=None, intrinsics=None, ref_view_strategy="first"):
        self.images.append(images)
        B, S, _, h, w = images.shape
        ext = torch.eye(4)[:3].expand(B, S, 3, 4)
        Kp = torch.tensor([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]]).expand(B, S, 3, 3)
        return DA3Output(depth=torch.ones(B, S, h, w), depth_conf=torch.full((B, S, h, w), 2.0),
                         extrinsics=ext.clone(), intrinsics=Kp.clone())


@pytest.mark.parametrize("device_io", [False, True], ids=["numpy", "device"])
def test_engine_runs_the_network_on_the_undistorted_image_and_publishes_the_calibration(device_io):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    frames = [Frame(raw, 1, "c", intrinsics=PINCUSHION), Frame(raw, 2, "c", intrinsics=PINCUSHION)]
    undistorted, inside = Undistorter().undistort(frames[0])
    net = _EchoNet()
    pred = DA3Engine(net, process_res=56, condition_on_intrinsics=True, device_io=device_io).predict(frames)
    ref = DA3Engine(_EchoNet(), process_res=56, device_io=device_io)
    ref.model.images.clear()
    ref.predict([undistorted, undistorted])  # the same network input as an undistorted camera's
    torch.testing.assert_close(net.images[0], ref.model.images[0])
    for i in range(2):
        k = pred.intrinsics[i]  # the calibration as given: K, D, model, size
        np.testing.assert_array_equal(k.K, PINCUSHION.K)
        np.testing.assert_array_equal(k.D, PINCUSHION.D)
        assert (k.distortion_model, k.width, k.height) == ("plumb_bob", W, H)
        np.testing.assert_array_equal(pred.frames[i].image, undistorted.image)  # the cloud's colours
        assert np.isnan(pred.depth[i][~inside]).all() and np.allclose(pred.depth[i][inside], 1.0)
    if device_io:
        np.testing.assert_array_equal(pred.device_maps.depth[0].numpy(), pred.depth[0])
        np.testing.assert_array_equal(pred.device_maps.images[0].numpy(), undistorted.image)
        assert np.isnan(pred.depth_thumbs[0]).any()
    off = DA3Engine(_EchoNet(), process_res=56, device_io=device_io).predict(frames)  # intrinsics not used
    np.testing.assert_array_equal(off.frames[0].image, raw)
    assert np.isfinite(off.depth[0]).all()
