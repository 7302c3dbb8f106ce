"""SceneRenderer's contract, scene extras, and scene geometry checked in the compiled model."""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

import envs  # noqa: F401  (chooses the GL backend first)
from envs.rendering import SceneRenderer
from envs.scenes import FAMILIES, MjcfExtras
from envs.scenes.arm import JOINTS


def sample(name: str, seed: int = 0, views: int = 3):
    family = FAMILIES[name]
    rng = np.random.default_rng(seed)
    spec = family.sample_spec(rng)
    return family, spec, family.sample_poses(spec, rng, views)


def test_dropping_a_renderer_leaves_the_others_intact() -> None:
    # GL object ids are per context: a renderer dropped without close() must free its MuJoCo
    # context under its own GL context, not under the one that happens to be current.
    family, spec, poses = sample("rooms_free")
    first = SceneRenderer(family.xml(spec), 32)
    expected = first.render(poses[0])
    second = SceneRenderer(family.xml(spec), 32)
    del first
    np.testing.assert_array_equal(second.render(poses[0]), expected)
    second.close()


def test_renders_are_fresh_arrays_and_close_is_final() -> None:
    family, spec, poses = sample("shepard_metzler_5")
    renderer = SceneRenderer(family.xml(spec), (24, 32))
    first, second = renderer.render(poses[0]), renderer.render(poses[0])
    assert first.shape == (24, 32, 3) and first.dtype == np.uint8
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, second)
    first[:] = 0  # changing a returned image changes nothing else
    np.testing.assert_array_equal(renderer.render(poses[0]), second)
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        renderer.render_many(poses[:, :4])
    with pytest.raises(ValueError, match="no camera named"):
        renderer.render("nowhere")
    renderer.close()
    renderer.close()
    with pytest.raises(RuntimeError, match="close"):
        renderer.render(poses[0])


def test_bad_xml_names_the_problem() -> None:
    with pytest.raises(ValueError, match="does not compile"):
        SceneRenderer("<mujoco><worldbody><geom type='sphere'/></worldbody>", 16)
    with pytest.raises(ValueError, match="MjcfExtras.worldbody"):
        FAMILIES["rooms_ring"].xml(sample("rooms_ring")[1], MjcfExtras(worldbody="<body>"))


def test_extras_add_a_movable_agent_camera() -> None:
    family, spec, _ = sample("rooms_free")
    extras = MjcfExtras(worldbody='<body name="agent" mocap="true" pos="0 -3 1">'
                                  '<camera name="eye" xyaxes="1 0 0 0 0 1"/></body>')
    xml = family.xml(spec, extras)
    assert family.xml(spec) != xml and family.xml(spec, extras) == xml
    with SceneRenderer(xml, 32) as renderer:
        assert renderer.model.ncam >= 3
        south = renderer.render("eye")
        renderer.set_body_pos("agent", (0.0, 3.0, 1.0))  # now close to the north wall
        north = renderer.render("eye")
    assert np.abs(south.astype(int) - north.astype(int)).mean() > 5


@pytest.mark.parametrize("name", ["rooms_ring", "rooms_free_rotations"])
def test_room_objects_rest_on_the_floor_in_the_compiled_model(name: str) -> None:
    for seed in range(6):
        family, spec, _ = sample(name, seed)
        model = mujoco.MjModel.from_xml_string(family.xml(spec))
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        for i, obj in enumerate(spec.objects):
            geom = model.geom(f"object_{i}")
            if geom.type[0] == mujoco.mjtGeom.mjGEOM_MESH:
                mesh = model.mesh(geom.dataid[0])
                local = model.mesh_vert[mesh.vertadr[0]:mesh.vertadr[0] + mesh.vertnum[0]]
            else:  # yaw-only rotation: the bottom of the bounding box touches the primitive
                aabb = model.geom_aabb[geom.id]
                local = aabb[:3] - aabb[3:] * np.array([(0, 0, 1)])
            placed = data.geom(f"object_{i}")
            world = placed.xpos + local @ placed.xmat.reshape(3, 3).T
            assert world[:, 2].min() == pytest.approx(0.0, abs=2e-3), (seed, obj.shape)
            assert np.hypot(world[:, 0] - obj.position[0],
                            world[:, 1] - obj.position[1]).max() <= obj.footprint + 1e-3


def test_free_cameras_keep_clear_and_ring_cameras_face_the_centre() -> None:
    for seed in range(5):
        family, spec, poses = sample("rooms_free_rotations", seed, views=20)
        limit = family.shell.half_size - family.free_margin
        assert (np.abs(poses[:, :2]) <= limit + 1e-6).all()
        np.testing.assert_allclose(poses[:, 2], family.eye_height)
        for obj in spec.objects:
            gaps = np.hypot(poses[:, 0] - obj.position[0], poses[:, 1] - obj.position[1])
            assert (gaps >= obj.footprint + family.free_clearance - 1e-5).all()
        lo, hi = family.free_pitch
        assert ((poses[:, 4] >= lo - 1e-6) & (poses[:, 4] <= hi + 1e-6)).all()
        ring, _, ring_poses = sample("rooms_ring", seed, views=20)
        np.testing.assert_allclose(np.hypot(ring_poses[:, 0], ring_poses[:, 1]),
                                   ring.ring_radius, rtol=1e-5)
        heading = np.arctan2(-ring_poses[:, 1], -ring_poses[:, 0])  # towards the centre
        np.testing.assert_allclose(np.cos(ring_poses[:, 3] - heading), 1.0, atol=1e-5)


def test_arm_angles_within_limits_and_above_the_table() -> None:
    family = FAMILIES["arm"]
    model = None
    for seed in range(8):
        _, spec, _ = sample("arm", seed)
        model = mujoco.MjModel.from_xml_string(family.xml(spec))
        data = mujoco.MjData(model)
        data.qpos[:] = family.initial_qpos(spec)
        mujoco.mj_forward(model, data)
        for joint, angle in zip(JOINTS, spec.joint_angles, strict=True):
            low, high = model.joint(joint).range
            assert low <= angle <= high
        for body in ("forearm", "hand_link"):
            assert data.body(body).xpos[2] > family.arm.table_height
        assert data.site("hand").xpos[2] > family.arm.table_height
        target = np.array(spec.target_position)
        np.testing.assert_allclose(data.site("target").xpos, target, atol=1e-9)
        assert np.linalg.norm(target - family.arm.shoulder) <= family.arm.reach
        assert abs(target[0]) <= family.arm.table_half_size
    assert model is not None
    assert model.nu == len(JOINTS)  # one velocity actuator per joint
    assert all(model.actuator(f"{j}_velocity").trntype == 0 for j in JOINTS)
    assert math.isclose(model.opt.timestep, 0.01)
