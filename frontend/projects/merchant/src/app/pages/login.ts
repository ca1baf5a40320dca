import { Component, inject, signal } from '@angular/core';
import { FormControl, FormGroup, ReactiveFormsModule, Validators } from '@angular/forms';
import { MatButtonModule } from '@angular/material/button';
import { MatFormFieldModule } from '@angular/material/form-field';
import { MatInputModule } from '@angular/material/input';
import { ActivatedRoute, Router } from '@angular/router';

import { ApiError, describeError } from '@shared/rest';
import { Session } from '../session';

/** Where the user was going: a path inside this app, never another site. */
export function afterSignIn(next: string | null): string {
  return next && /^\/(?![/\\])/.test(next) ? next : '/home';
}

/** A merchant user's sign-in; afterwards, back to the page that asked for it. */
@Component({
  selector: 'pm-login-page',
  imports: [ReactiveFormsModule, MatFormFieldModule, MatInputModule, MatButtonModule],
  template: `
    <main class="login">
      <form class="panel" [formGroup]="form" (ngSubmit)="submit()" aria-labelledby="login-title">
        <h1 id="login-title">Sign in to your paymesh account</h1>
        @if (expired) { <p class="muted" role="status">Your session ended. Sign in again.</p> }
        <mat-form-field appearance="outline">
          <mat-label>Email</mat-label>
          <input matInput type="email" formControlName="email" autocomplete="username" data-testid="email" required>
          <mat-error>Enter your email.</mat-error>
        </mat-form-field>
        <mat-form-field appearance="outline">
          <mat-label>Password</mat-label>
          <input matInput type="password" formControlName="password" autocomplete="current-password" data-testid="password" required>
          <mat-error>Enter your password.</mat-error>
        </mat-form-field>
        @if (error()) { <p class="error-text" role="alert" data-testid="login-error">{{ error() }}</p> }
        <button mat-flat-button type="submit" [disabled]="busy()" data-testid="sign-in">Sign in</button>
        <p class="muted hint">New here? Ask your team's admin for an invitation.</p>
      </form>
    </main>
  `,
  styles: `
    .login { min-height: 100vh; display: flex; align-items: center; justify-content: center; padding: 1rem; box-sizing: border-box; }
    form { width: 100%; max-width: 22rem; display: flex; flex-direction: column; gap: 0.25rem; padding: 2rem; }
    h1 { font-size: 1.35rem; font-weight: 500; margin: 0 0 1rem; }
    .hint { font-size: 0.85rem; margin: 1rem 0 0; }
  `,
})
export class LoginPage {
  private readonly session = inject(Session);
  private readonly router = inject(Router);
  private readonly query = inject(ActivatedRoute).snapshot.queryParamMap;
  readonly expired = this.query.has('expired');
  private readonly next = afterSignIn(this.query.get('next'));
  readonly busy = signal(false);
  readonly error = signal('');
  readonly form = new FormGroup({
    email: new FormControl('', { nonNullable: true, validators: [Validators.required] }),
    password: new FormControl('', { nonNullable: true, validators: [Validators.required] }),
  });

  async submit(): Promise<void> {
    if (this.form.invalid || this.busy()) {
      this.form.markAllAsTouched();
      return;
    }
    this.busy.set(true);
    this.error.set('');
    try {
      await this.session.signIn(this.form.controls.email.value, this.form.controls.password.value);
      await this.router.navigateByUrl(this.next);
    } catch (error) {
      this.error.set(
        error instanceof ApiError && error.status === 401 ? 'Wrong email or password.' : describeError(error),
      );
    } finally {
      this.busy.set(false);
    }
  }
}
