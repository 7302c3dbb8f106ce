import json
import math

import mujoco
import numpy as np
import pytest

import envs  # noqa: F401  (chooses the GL backend first)
from envs.camera import forward_vector, pose_looking_at
from envs.rendering import SceneRenderer, configure_mujoco_gl
from envs.scenes import FAMILIES, get_family
from envs.scenes.rooms import shape_extent

NAMES = sorted(FAMILIES)


def scene(name: str, seed: int = 0, views: int = 3):
    family = FAMILIES[name]
    rng = np.random.default_rng(seed)
    spec = family.sample_spec(rng)
    return family, spec, family.sample_poses(spec, rng, views)


@pytest.mark.parametrize("name", NAMES)
def test_xml_compiles_with_named_cameras(name: str) -> None:
    family, spec, _ = scene(name)
    model = mujoco.MjModel.from_xml_string(family.xml(spec))
    assert model.ncam >= 2
    assert all(model.camera(i).name for i in range(model.ncam))


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_scene_other_seed_other_scene(name: str) -> None:
    family, spec, poses = scene(name, seed=3)
    again, spec_again, poses_again = scene(name, seed=3)
    assert spec == spec_again and family.xml(spec) == again.xml(spec_again)
    np.testing.assert_array_equal(poses, poses_again)
    assert poses.shape == (3, 5) and poses.dtype == np.float32
    _, other, _ = scene(name, seed=4)
    assert other != spec


@pytest.mark.parametrize("name", NAMES)
def test_truth_is_json(name: str) -> None:
    family, spec, _ = scene(name)
    assert json.loads(json.dumps(family.truth(spec)))


@pytest.mark.parametrize("name", NAMES)
def test_renders_are_deterministic_coloured_and_independent(name: str) -> None:
    family, spec, poses = scene(name)
    first = family.render(spec, poses, image_size=32)
    second = family.render(spec, poses, image_size=32)
    assert first.shape == (3, 32, 32, 3) and first.dtype == np.uint8
    np.testing.assert_array_equal(first, second)
    for image in first:
        assert len(np.unique(image.reshape(-1, 3), axis=0)) >= 4, "a nearly blank image"
    assert not np.shares_memory(first[0], first[1])


def test_shepard_metzler_cubes_are_a_centred_self_avoiding_chain() -> None:
    for seed in range(20):
        family, spec, _ = scene("shepard_metzler_7", seed)
        cells = np.array(spec.cells)
        assert len(cells) == 7 and len({tuple(c) for c in cells}) == 7
        assert (np.abs(np.diff(cells, axis=0)).sum(1) == 1).all(), "consecutive cubes touch"
        np.testing.assert_allclose(spec.positions.mean(0), 0, atol=1e-12)
    assert len(scene("shepard_metzler_5")[1].cells) == 5


def test_shepard_metzler_object_fills_the_centre_of_every_view() -> None:
    family, spec, poses = scene("shepard_metzler_7", views=6)
    images = family.render(spec, poses, image_size=32)
    centre = images[:, 12:20, 12:20].reshape(6, -1)
    assert (centre.max(1) > 40).all(), "the object should be in the middle of each view"


@pytest.mark.parametrize("name", ["rooms_ring", "rooms_free", "rooms_free_rotations",
                                  "rooms_near"])
def test_room_objects_inside_and_apart_cameras_inside(name: str) -> None:
    family = FAMILIES[name]
    half = family.shell.half_size
    for seed in range(20):
        _, spec, poses = scene(name, seed, views=10)
        assert 1 <= len(spec.objects) <= 3
        for i, a in enumerate(spec.objects):
            x, y, _ = a.position
            assert abs(x) + a.footprint <= half and abs(y) + a.footprint <= half
            for b in spec.objects[i + 1:]:
                gap = math.dist(a.position[:2], b.position[:2])
                assert gap > a.footprint + b.footprint
            assert shape_extent(a.shape, a.size)[0] == pytest.approx(a.position[2], abs=1e-3)
        assert (np.abs(poses[:, :2]) < half).all()
        if name != "rooms_free_rotations":
            assert all(o.yaw == 0 for o in spec.objects)


def fraction_of_views_with_objects(name: str, scenes: int = 6, views: int = 10) -> float:
    """Share of a family's views in which an object covers at least one pixel at 32x32."""
    family, seen = FAMILIES[name], []
    for seed in range(scenes):
        _, spec, poses = scene(name, seed, views=views)
        with SceneRenderer(family.xml(spec), 32) as renderer:
            masks = family.object_masks(renderer, poses, renderer.render_many(poses))
        seen.append(masks.reshape(views, -1).any(1))
    return float(np.mean(seen))


def test_rooms_near_cameras_face_the_centre_and_see_the_objects() -> None:
    family = FAMILIES["rooms_near"]
    for seed in range(10):
        _, _, poses = scene("rooms_near", seed, views=10)
        to_centre = np.arctan2(-poses[:, 1], -poses[:, 0])
        off = np.angle(np.exp(1j * (poses[:, 3] - to_centre)))
        assert (np.abs(off) <= family.free_facing + 1e-6).all()
    near, free = (fraction_of_views_with_objects(n) for n in ("rooms_near", "rooms_free"))
    assert near > 0.8 and near > free + 0.3, (near, free)


def test_arm_target_within_reach_and_joint_angles_applied() -> None:
    family = FAMILIES["arm"]
    for seed in range(10):
        _, spec, _ = scene("arm", seed)
        truth = family.truth(spec)
        assert truth["target_reachable"]
        with SceneRenderer(family.xml(spec), 32) as renderer:
            renderer.set_qpos(family.initial_qpos(spec))
            hand = renderer.data.site("hand").xpos
            np.testing.assert_allclose(hand, truth["hand_position"], atol=1e-6)


def test_camera_convention_marker_straight_ahead_is_in_the_centre() -> None:
    pose = np.array([0.5, -1.0, 1.2, 0.7, -0.3])
    ahead = pose[:3] + 3.0 * forward_vector(pose[3], pose[4])
    xml = f"""<mujoco><visual><quality offsamples="0"/></visual><worldbody>
      <light pos="0 0 5" dir="0 0 -1" directional="true"/>
      <geom type="sphere" size="0.25" pos="{ahead[0]} {ahead[1]} {ahead[2]}" rgba="1 0 0 1"/>
      </worldbody></mujoco>"""
    with SceneRenderer(xml, 33) as renderer:
        image = renderer.render(pose)
    red = (image[..., 0] > 100) & (image[..., 1] < 60)
    rows, cols = np.nonzero(red)
    assert len(rows) > 10
    assert abs(rows.mean() - 16) < 1.5 and abs(cols.mean() - 16) < 1.5
    np.testing.assert_allclose(pose_looking_at(pose[:3], ahead), pose, atol=1e-12)


def test_loading_another_scene_renders_like_a_fresh_renderer() -> None:
    family = FAMILIES["rooms_free_rotations"]
    _, first, _ = scene("rooms_free_rotations", seed=1)
    _, second, poses = scene("rooms_free_rotations", seed=2)
    with SceneRenderer(family.xml(first), 32) as reused:
        reused.render(poses[0])
        reused.load(family.xml(second))
        np.testing.assert_array_equal(reused.render_many(poses),
                                      family.render(second, poses, image_size=32))


def test_bad_gl_backend_names_what_to_set() -> None:
    with pytest.raises(ValueError, match="MUJOCO_GL=egl"):
        configure_mujoco_gl({"MUJOCO_GL": "directx"})
    environ: dict[str, str] = {}
    assert configure_mujoco_gl(environ) == "egl" and environ["MUJOCO_GL"] == "egl"
    assert configure_mujoco_gl({"MUJOCO_GL": "osmesa"}) == "osmesa"


def test_unknown_family_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="rooms_ring"):
        get_family("rooms_square")


@pytest.mark.parametrize("name", NAMES)
def test_apply_renders_exactly_like_compiling_the_spec(name: str) -> None:
    """Every spec of a family fits the model of any other: write it in, same pixels."""
    family = FAMILIES[name]
    rng = np.random.default_rng(5)
    specs = [family.sample_spec(rng) for _ in range(6)]
    with SceneRenderer(family.xml(specs[0]), 24) as renderer:
        for spec in specs[1:]:
            poses = family.sample_poses(spec, rng, 3)
            qpos = family.initial_qpos(spec)
            renderer.load(family.xml(specs[0]))
            family.apply(spec, renderer.model)
            renderer.forward()
            if qpos is not None:
                renderer.set_qpos(qpos)
            applied = renderer.render_many(poses)
            renderer.load(family.xml(spec))
            if qpos is not None:
                renderer.set_qpos(qpos)
            np.testing.assert_array_equal(applied, renderer.render_many(poses))
