! Fortran interfaces to the dynblocks C API (include/dynblocks/*.h) through
! ISO_C_BINDING. Handles are type(c_ptr); every function returns the C
! status (DYNB_OK = 0). Strings passed in must end with c_null_char (see
! dynb_cstr). Arrays are passed as they lie in memory: a Fortran array
! x(width, height, channels, n) is the C API's row-major [n, channels,
! height, width] tensor, and logits(classes, n) its [n, classes].
module dynblocks
  use, intrinsic :: iso_c_binding
  implicit none
  private

  ! Status codes (dynblocks/status.h); dynb_status_name gives every name.
  integer(c_int), parameter, public :: DYNB_OK = 0
  integer(c_int), parameter, public :: DYNB_STATUS_INVALID_ARGUMENT = 10
  integer(c_int), parameter, public :: DYNB_STATUS_SHAPE_MISMATCH = 11
  integer(c_int), parameter, public :: DYNB_STATUS_NO_DEVICE = 31
  integer(c_int), parameter, public :: DYNB_STATUS_MISUSE = 60
  ! Element types, memory modes, passes, optimisers and their parameters.
  integer(c_int), parameter, public :: DYNB_F32 = 0, DYNB_F64 = 1, DYNB_I32 = 2
  integer(c_int), parameter, public :: DYNB_MEMORY_STORE = 0, DYNB_MEMORY_CHECKPOINT = 1
  integer(c_int), parameter, public :: DYNB_PASS_EVAL = 0, DYNB_PASS_TRAIN = 1
  integer(c_int), parameter, public :: DYNB_OPTIM_SGD = 0, DYNB_OPTIM_ADAM = 1
  integer(c_int), parameter, public :: DYNB_OPTIM_LR = 300, DYNB_OPTIM_MOMENTUM = 301, &
       DYNB_OPTIM_WEIGHT_DECAY = 302, DYNB_OPTIM_NESTEROV = 303, DYNB_OPTIM_BETA1 = 304, &
       DYNB_OPTIM_BETA2 = 305, DYNB_OPTIM_EPS = 306

  public :: dynb_version_number, dynb_ctx_create, dynb_ctx_free, dynb_ctx_finish
  public :: dynb_tensor_create, dynb_tensor_free, dynb_tensor_write, dynb_tensor_read
  public :: dynb_net_create, dynb_net_create_from_file, dynb_net_load, dynb_net_save, dynb_net_free
  public :: dynb_net_init, dynb_net_param_count, dynb_net_param_get, dynb_net_param_set
  public :: dynb_plan_build, dynb_plan_free, dynb_plan_forward, dynb_plan_logits
  public :: dynb_plan_loss, dynb_plan_backward
  public :: dynb_optimizer_create, dynb_optimizer_free, dynb_optimizer_set, dynb_optimizer_step
  public :: dynb_last_error, dynb_status_text, dynb_cstr

  interface
    function dynb_version_number() bind(c, name="dynb_version_number")
      import :: c_int
      integer(c_int) :: dynb_version_number
    end function

    ! ---- contexts (dynblocks/context.h); desc may be c_null_ptr --------------
    function dynb_ctx_create(desc, ctx) bind(c, name="dynb_ctx_create")
      import :: c_int, c_ptr
      type(c_ptr), value :: desc
      type(c_ptr), intent(out) :: ctx
      integer(c_int) :: dynb_ctx_create
    end function
    subroutine dynb_ctx_free(ctx) bind(c, name="dynb_ctx_free")
      import :: c_ptr
      type(c_ptr), value :: ctx
    end subroutine
    function dynb_ctx_finish(ctx) bind(c, name="dynb_ctx_finish")
      import :: c_int, c_ptr
      type(c_ptr), value :: ctx
      integer(c_int) :: dynb_ctx_finish
    end function
    function c_ctx_last_error(ctx) bind(c, name="dynb_ctx_last_error")
      import :: c_ptr
      type(c_ptr), value :: ctx
      type(c_ptr) :: c_ctx_last_error
    end function
    function c_status_name(st) bind(c, name="dynb_status_name")
      import :: c_int, c_ptr
      integer(c_int), value :: st
      type(c_ptr) :: c_status_name
    end function

    ! ---- tensors (dynblocks/tensor.h) ----------------------------------------
    function dynb_tensor_create(ctx, dtype, ndim, dims, t) bind(c, name="dynb_tensor_create")
      import :: c_int, c_int64_t, c_ptr
      type(c_ptr), value :: ctx
      integer(c_int), value :: dtype, ndim
      integer(c_int64_t), intent(in) :: dims(*)
      type(c_ptr), intent(out) :: t
      integer(c_int) :: dynb_tensor_create
    end function
    subroutine dynb_tensor_free(t) bind(c, name="dynb_tensor_free")
      import :: c_ptr
      type(c_ptr), value :: t
    end subroutine
    ! bytes: c_sizeof(host), which must equal the tensor's size.
    function dynb_tensor_write(t, host, bytes) bind(c, name="dynb_tensor_write")
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: t
      type(*), intent(in) :: host(*)
      integer(c_size_t), value :: bytes
      integer(c_int) :: dynb_tensor_write
    end function
    function dynb_tensor_read(t, host, bytes) bind(c, name="dynb_tensor_read")
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: t
      type(*), intent(inout) :: host(*)
      integer(c_size_t), value :: bytes
      integer(c_int) :: dynb_tensor_read
    end function

    ! ---- networks (dynblocks/network.h); strings end with c_null_char --------
    function dynb_net_create(ctx, spec_json, real, seed, net) bind(c, name="dynb_net_create")
      import :: c_int, c_int64_t, c_ptr, c_char
      type(c_ptr), value :: ctx
      character(kind=c_char), intent(in) :: spec_json(*)
      integer(c_int), value :: real
      integer(c_int64_t), value :: seed
      type(c_ptr), intent(out) :: net
      integer(c_int) :: dynb_net_create
    end function
    function dynb_net_create_from_file(ctx, path, real, seed, net) &
         bind(c, name="dynb_net_create_from_file")
      import :: c_int, c_int64_t, c_ptr, c_char
      type(c_ptr), value :: ctx
      character(kind=c_char), intent(in) :: path(*)
      integer(c_int), value :: real
      integer(c_int64_t), value :: seed
      type(c_ptr), intent(out) :: net
      integer(c_int) :: dynb_net_create_from_file
    end function
    function dynb_net_load(ctx, path, real, net) bind(c, name="dynb_net_load")
      import :: c_int, c_ptr, c_char
      type(c_ptr), value :: ctx
      character(kind=c_char), intent(in) :: path(*)
      integer(c_int), value :: real
      type(c_ptr), intent(out) :: net
      integer(c_int) :: dynb_net_load
    end function
    function dynb_net_save(net, path) bind(c, name="dynb_net_save")
      import :: c_int, c_ptr, c_char
      type(c_ptr), value :: net
      character(kind=c_char), intent(in) :: path(*)
      integer(c_int) :: dynb_net_save
    end function
    subroutine dynb_net_free(net) bind(c, name="dynb_net_free")
      import :: c_ptr
      type(c_ptr), value :: net
    end subroutine
    function dynb_net_init(net, seed) bind(c, name="dynb_net_init")
      import :: c_int, c_int64_t, c_ptr
      type(c_ptr), value :: net
      integer(c_int64_t), value :: seed
      integer(c_int) :: dynb_net_init
    end function
    function dynb_net_param_count(net, count) bind(c, name="dynb_net_param_count")
      import :: c_int, c_ptr, c_size_t
      type(c_ptr), value :: net
      integer(c_size_t), intent(out) :: count
      integer(c_int) :: dynb_net_param_count
    end function
    ! count: elements of host, of type host_dtype (DYNB_F32 or DYNB_F64).
    function dynb_net_param_get(net, name, host_dtype, host, count) &
         bind(c, name="dynb_net_param_get")
      import :: c_int, c_ptr, c_char, c_size_t
      type(c_ptr), value :: net
      character(kind=c_char), intent(in) :: name(*)
      integer(c_int), value :: host_dtype
      type(*), intent(inout) :: host(*)
      integer(c_size_t), value :: count
      integer(c_int) :: dynb_net_param_get
    end function
    function dynb_net_param_set(net, name, host_dtype, host, count) &
         bind(c, name="dynb_net_param_set")
      import :: c_int, c_ptr, c_char, c_size_t
      type(c_ptr), value :: net
      character(kind=c_char), intent(in) :: name(*)
      integer(c_int), value :: host_dtype
      type(*), intent(in) :: host(*)
      integer(c_size_t), value :: count
      integer(c_int) :: dynb_net_param_set
    end function

    ! ---- plans (dynblocks/plan.h); labels and dx may be c_null_ptr -----------
    function dynb_plan_build(net, batch, mode, plan) bind(c, name="dynb_plan_build")
      import :: c_int, c_int64_t, c_ptr
      type(c_ptr), value :: net
      integer(c_int64_t), value :: batch
      integer(c_int), value :: mode
      type(c_ptr), intent(out) :: plan
      integer(c_int) :: dynb_plan_build
    end function
    subroutine dynb_plan_free(plan) bind(c, name="dynb_plan_free")
      import :: c_ptr
      type(c_ptr), value :: plan
    end subroutine
    function dynb_plan_forward(plan, x, labels, pass) bind(c, name="dynb_plan_forward")
      import :: c_int, c_ptr
      type(c_ptr), value :: plan, x, labels
      integer(c_int), value :: pass
      integer(c_int) :: dynb_plan_forward
    end function
    function dynb_plan_logits(plan, out) bind(c, name="dynb_plan_logits")
      import :: c_int, c_ptr
      type(c_ptr), value :: plan, out
      integer(c_int) :: dynb_plan_logits
    end function
    function dynb_plan_loss(plan, loss, accuracy) bind(c, name="dynb_plan_loss")
      import :: c_int, c_ptr, c_double
      type(c_ptr), value :: plan
      real(c_double), intent(out) :: loss, accuracy
      integer(c_int) :: dynb_plan_loss
    end function
    function dynb_plan_backward(plan, dx) bind(c, name="dynb_plan_backward")
      import :: c_int, c_ptr
      type(c_ptr), value :: plan, dx
      integer(c_int) :: dynb_plan_backward
    end function

    ! ---- optimisers (dynblocks/optimizer.h) ----------------------------------
    function dynb_optimizer_create(net, kind, opt) bind(c, name="dynb_optimizer_create")
      import :: c_int, c_ptr
      type(c_ptr), value :: net
      integer(c_int), value :: kind
      type(c_ptr), intent(out) :: opt
      integer(c_int) :: dynb_optimizer_create
    end function
    subroutine dynb_optimizer_free(opt) bind(c, name="dynb_optimizer_free")
      import :: c_ptr
      type(c_ptr), value :: opt
    end subroutine
    function dynb_optimizer_set(opt, param, value) bind(c, name="dynb_optimizer_set")
      import :: c_int, c_ptr, c_double
      type(c_ptr), value :: opt
      integer(c_int), value :: param
      real(c_double), value :: value
      integer(c_int) :: dynb_optimizer_set
    end function
    function dynb_optimizer_step(opt) bind(c, name="dynb_optimizer_step")
      import :: c_int, c_ptr
      type(c_ptr), value :: opt
      integer(c_int) :: dynb_optimizer_step
    end function
  end interface

contains

  ! A Fortran string as a C string (trailing blanks dropped).
  function dynb_cstr(s) result(c)
    character(len=*), intent(in) :: s
    character(kind=c_char, len=:), allocatable :: c
    c = trim(s) // c_null_char
  end function

  ! Copies a NUL-terminated C string into a Fortran string.
  function from_c(p) result(s)
    type(c_ptr), intent(in) :: p
    character(len=:), allocatable :: s
    character(kind=c_char), pointer :: chars(:)
    integer :: n
    interface
      function strlen(str) bind(c, name="strlen")
        import :: c_ptr, c_size_t
        type(c_ptr), value :: str
        integer(c_size_t) :: strlen
      end function
    end interface
    n = int(strlen(p))
    call c_f_pointer(p, chars, [n])
    allocate(character(len=n) :: s)
    s = transfer(chars(1:n), s)
  end function

  ! The context's message for its last failed call.
  function dynb_last_error(ctx) result(s)
    type(c_ptr), intent(in) :: ctx
    character(len=:), allocatable :: s
    s = from_c(c_ctx_last_error(ctx))
  end function

  ! A status's name, e.g. "DYNB_STATUS_SHAPE_MISMATCH".
  function dynb_status_text(st) result(s)
    integer(c_int), intent(in) :: st
    character(len=:), allocatable :: s
    s = from_c(c_status_name(st))
  end function
end module dynblocks
