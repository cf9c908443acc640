! A Fortran host code training a dynblocks network through ISO_C_BINDING:
! 1x8x8 fields with a bright vertical bar in the left, middle or right
! third; the network learns which. The library creates the OpenCL context.
! Build: gfortran dynblocks.f90 train.f90 $(pkg-config --libs dynblocks)
program train
  use, intrinsic :: iso_c_binding
  use dynblocks
  implicit none
  integer, parameter :: n = 48, side = 8, classes = 3, steps = 60
  character(len=*), parameter :: spec = &
       '{"input": {"channels": 1, "height": 8, "width": 8}, "classes": 3, ' // &
       '"open": {"width": 8}, "blocks": [{"width": 8, "layer": "doublesym", ' // &
       '"norm": "tv", "scheme": "rk4", "t_states": [0, 0.5, 1, 1.5, 2]}]}'
  type(c_ptr) :: ctx = c_null_ptr, net = c_null_ptr, plan = c_null_ptr, opt = c_null_ptr
  type(c_ptr) :: xt = c_null_ptr, yt = c_null_ptr, zt = c_null_ptr
  ! x(width, height, channel, image) is the C API's [n, 1, 8, 8].
  real(c_float) :: x(side, side, 1, n), logits(classes, n)
  integer(c_int32_t) :: y(n)
  real(c_double) :: loss, acc, first
  integer(c_int64_t) :: state = 12345
  integer :: step, i, correct

  print '(a, i0)', 'dynblocks version number ', dynb_version_number()
  call check(dynb_ctx_create(c_null_ptr, ctx))
  call check(dynb_tensor_create(ctx, DYNB_F32, 4_c_int, [int(n, c_int64_t), 1_c_int64_t, &
                                int(side, c_int64_t), int(side, c_int64_t)], xt))
  call check(dynb_tensor_create(ctx, DYNB_I32, 1_c_int, [int(n, c_int64_t)], yt))
  call check(dynb_tensor_create(ctx, DYNB_F32, 2_c_int, [int(n, c_int64_t), &
                                int(classes, c_int64_t)], zt))
  call check(dynb_net_create(ctx, dynb_cstr(spec), DYNB_F32, 42_c_int64_t, net))
  call check(dynb_plan_build(net, int(n, c_int64_t), DYNB_MEMORY_STORE, plan))
  call check(dynb_optimizer_create(net, DYNB_OPTIM_SGD, opt))
  call check(dynb_optimizer_set(opt, DYNB_OPTIM_LR, 0.05_c_double))

  do step = 0, steps
    call simulate()
    call check(dynb_tensor_write(xt, x, c_sizeof(x)))
    call check(dynb_tensor_write(yt, y, c_sizeof(y)))
    call check(dynb_plan_forward(plan, xt, yt, DYNB_PASS_TRAIN))
    call check(dynb_plan_loss(plan, loss, acc))
    call check(dynb_plan_backward(plan, c_null_ptr))
    call check(dynb_optimizer_step(opt))
    if (step == 0) first = loss
    if (mod(step, 10) == 0) print '(a, i3, a, f7.4, a, f5.2)', 'step', step, '  loss ', loss, &
         '  batch accuracy ', acc
  end do

  ! Predictions for fresh fields, in evaluation mode.
  call simulate()
  call check(dynb_tensor_write(xt, x, c_sizeof(x)))
  call check(dynb_plan_forward(plan, xt, c_null_ptr, DYNB_PASS_EVAL))
  call check(dynb_plan_logits(plan, zt))
  call check(dynb_tensor_read(zt, logits, c_sizeof(logits)))
  correct = 0
  do i = 1, n
    if (maxloc(logits(:, i), 1) - 1 == y(i)) correct = correct + 1
    if (i <= 6) print '(a, i0, a, i0, a, i0)', 'field ', i, ': bar in third ', y(i), &
         ', predicted ', maxloc(logits(:, i), 1) - 1
  end do
  print '(a, i0, a, i0, a, f7.4, a, f7.4)', 'held-out accuracy ', correct, '/', n, &
       '; loss ', first, ' -> ', loss

  call dynb_tensor_free(xt)
  call dynb_tensor_free(yt)
  call dynb_tensor_free(zt)
  call dynb_optimizer_free(opt)
  call dynb_plan_free(plan)
  call dynb_net_free(net)
  call dynb_ctx_free(ctx)
  if (.not. (loss < 0.5d0 * first)) stop 1

contains

  ! Stops with the library's message on any failure.
  subroutine check(st)
    integer(c_int), intent(in) :: st
    if (st /= DYNB_OK) then
      if (c_associated(ctx)) then
        print '(a, a, a, a)', 'dynblocks: ', dynb_status_text(st), ': ', dynb_last_error(ctx)
      else
        print '(a, a)', 'dynblocks: ', dynb_status_text(st)
      end if
      stop 1
    end if
  end subroutine

  ! A batch: class k has its bar in the k-th third of the columns, under
  ! uniform noise from a seeded generator (the same on every host).
  subroutine simulate()
    integer :: img, r, c
    do img = 1, n
      y(img) = int(mod(next() / 7, int(classes, c_int64_t)), c_int32_t)
      do r = 1, side
        do c = 1, side
          x(c, r, 1, img) = real(next(), c_float) / 2147483648.0 - 0.5
          if ((c - 1) * classes / side == y(img)) x(c, r, 1, img) = x(c, r, 1, img) + 1.0
        end do
      end do
    end do
  end subroutine

  integer(c_int64_t) function next()
    state = mod(state * 1103515245_c_int64_t + 12345_c_int64_t, 2147483648_c_int64_t)
    next = state
  end function
end program train
